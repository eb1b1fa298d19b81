"""Towers exported once to ONNX and run in ONNX Runtime, so that a query that only needs text never
imports torch (~1.0-1.4 s of every cold query).

A tower is exported from its own torch forward the first time a process loads it with torch and ONNX
Runtime is installed (``torch.onnx.export``, which needs the ``onnx`` package), into the user cache
dir under a name keyed by the weights' fingerprint and :data:`EXPORT_VERSION`; every later process opens
that file instead of the torch weights. Parity with the torch forward is tested
(``tests/test_onnx_towers.py``). ``MMSEARCH_ONNX=0`` turns the whole path off (torch everywhere).

A damaged or foreign file in the cache is removed and the tower runs in torch (and exports again).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmsearch import threads

# Bumped whenever an export's graph changes for the same weights (inputs, outputs, what it computes).
EXPORT_VERSION = 1
OPSET = 17


def enabled() -> bool:
    """Whether ONNX Runtime is installed and not turned off (``MMSEARCH_ONNX=0``)."""
    if os.environ.get("MMSEARCH_ONNX", "").strip().lower() in ("0", "off", "false", "no"):
        return False
    return importlib.util.find_spec("onnxruntime") is not None


def cache_file(kind: str, fingerprint: str) -> Path:
    """Where the export of tower ``kind`` with these weights is kept."""
    from platformdirs import user_cache_path

    return user_cache_path("mmsearch", appauthor=False) / "onnx" / f"{kind}-{fingerprint}-v{EXPORT_VERSION}.onnx"


class Session:
    """An ONNX Runtime session over one exported tower: named int64/float inputs in, first output out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One pool sized to the process's budget; idle threads sleep instead of spinning (they would
        # steal the core that HTTP, FAISS or the next query needs).
        opts.intra_op_num_threads = threads.budget()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self._session.get_inputs()]

    def run(self, feed: dict[str, Any]) -> Any:
        return self._session.run(None, feed)[0]

    def run_all(self, feed: dict[str, Any]) -> list[Any]:
        return list(self._session.run(None, feed))


def open_session(kind: str, fingerprint: str, inputs: Sequence[str]) -> Session | None:
    """The cached export of a tower, or None (not exported yet, ONNX Runtime missing or turned off).

    A file that ONNX Runtime cannot load, or whose inputs are not ``inputs``, is removed.
    """
    if not enabled():
        return None
    path = cache_file(kind, fingerprint)
    if not path.is_file():
        return None
    try:
        session = Session(path)
    except Exception:  # truncated, foreign or from a newer opset: re-exported by the next torch load
        path.unlink(missing_ok=True)
        return None
    if session.inputs != list(inputs):
        path.unlink(missing_ok=True)
        return None
    return session


def export(
    kind: str,
    fingerprint: str,
    forward: Callable[..., Any],
    example: tuple[Any, ...],
    inputs: Sequence[str],
    dynamic: dict[str, dict[int, str]],
    outputs: Sequence[str] = ("out",),
    modules: Sequence[Any] = (),
) -> bool:
    """Export ``forward`` (a function of torch tensors) for these weights into the cache (:func:`open_session`
    opens it); False when it cannot be (no ``onnx`` package, an operator without an ONNX form, a read-only
    cache dir): the tower keeps running in torch. ``modules``: the torch modules ``forward`` runs (their
    parameters become the graph's weights).
    """
    if not enabled():
        return False
    import torch

    class _Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.held = torch.nn.ModuleList(modules)

        def forward(self, *args: Any) -> Any:
            return forward(*args)

    path = cache_file(kind, fingerprint)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it bakes in
            torch.onnx.export(
                _Tower().eval(),
                example,
                str(tmp),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes={**dynamic, **{name: {0: "n"} for name in outputs}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        return False
    return True
