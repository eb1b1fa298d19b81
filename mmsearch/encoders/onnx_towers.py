"""Towers exported once to ONNX and run in ONNX Runtime, so that a query that only needs text never
imports torch (~1.0-1.4 s of every cold query).

A tower is exported from its own torch forward the first time a process loads it with torch and ONNX
Runtime is installed (``torch.onnx.export``, which needs the ``onnx`` package), into the user cache
dir under a name keyed by the weights' fingerprint and :data:`EXPORT_VERSION`; every later process opens
that file instead of the torch weights. Parity with the torch forward is tested
(``tests/test_onnx_towers.py``). ``MMSEARCH_ONNX=0`` turns the whole path off (torch everywhere).

The file is optimised once, at export (ONNX Runtime's portable "extended" graph optimisations: fused
attention, layer norms, GELU), with its weights in a file beside it (``NAME.onnx.PID.data``) that ONNX
Runtime maps instead of parsing them out of the model: a later process opens a session with no
optimisation pass in a quarter of the time (measured for OpenCLIP's text tower: 0.15 vs 0.43-0.6 s).

A damaged or foreign file in the cache is removed and the tower runs in torch (and exports again).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mmsearch import threads

# Bumped whenever an export's graph changes for the same weights (inputs, outputs, what it computes, its
# file layout). 2: pre-optimised, weights in a data file beside the model.
EXPORT_VERSION = 2
OPSET = 17


_quick_start = False


def quick_start() -> None:
    """Say that this process runs each tower only a few times (a command-line query): its sessions skip
    prepacking the weights for the matrix kernels. Measured for OpenCLIP's text tower: a session opens in
    13 instead of 190 ms and its first run takes 71 instead of 23 ms; later runs stay ~2x slower, so long-lived
    processes (index runs, the server) keep prepacking."""
    global _quick_start
    _quick_start = True


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
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised at export
        if _quick_start:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self._session.get_inputs()]
        self.shapes = [list(i.shape) for i in self._session.get_inputs()]  # a named axis is a dynamic one

    def run(self, feed: dict[str, Any]) -> Any:
        return self._session.run(None, feed)[0]

    def run_all(self, feed: dict[str, Any]) -> list[Any]:
        return list(self._session.run(None, feed))


def record_file(kind: str, weights: Path) -> Path | None:
    """Where what a torch load of the weights in file ``weights`` found is kept (their fingerprint, sizes,
    whether the export works), so a later process can open the export without reading the weights: keyed by
    the file's path, size and modification time (a changed file is loaded again). None: no such file."""
    import hashlib

    from platformdirs import user_cache_path

    try:
        st = weights.stat()
        key = f"{kind}:{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return None
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return user_cache_path("mmsearch", appauthor=False) / "records" / f"{kind}-{name}.json"


def read_record(path: Path | None) -> dict[str, Any] | None:
    """A record :func:`write_record` wrote for this export version; None when missing, damaged or older."""
    if path is None:
        return None
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) and got.get("export") == EXPORT_VERSION else None


def write_record(path: Path | None, info: dict[str, Any]) -> None:
    """Keep ``info`` (JSON) at ``path`` (atomically); a cache dir that cannot be written costs only this."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**info, "export": EXPORT_VERSION}), encoding="utf-8")
        os.replace(tmp, path)


def tokenizer_file(onnx: Path) -> Path:
    """Where a text tower's tokenizer is kept: beside its export, under the same name."""
    return onnx.with_name(onnx.name.removesuffix(".onnx") + ".tokenizer.json")


def recorded_export(kind: str, weights: Path | None) -> tuple[dict[str, Any], Path] | None:
    """What a torch load of the weights in file ``weights`` recorded, and the export of text tower ``kind`` it
    made, when that export worked and it and its tokenizer are there (and ONNX Runtime is on); None: the
    caller loads the weights."""
    if not enabled() or weights is None:
        return None
    info = read_record(record_file(kind, weights))
    if info is None or info.get("onnx") is not True or not isinstance(info.get("fingerprint"), str):
        return None
    onnx = cache_file(kind, info["fingerprint"])
    return (info, onnx) if onnx.is_file() and tokenizer_file(onnx).is_file() else None


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
        remove(path)
        return None
    if session.inputs != list(inputs):
        remove(path)
        return None
    return session


def remove(path: Path) -> None:
    """Remove an export and its weights."""
    path.unlink(missing_ok=True)
    for data in path.parent.glob(f"{path.name}.*.data"):
        data.unlink(missing_ok=True)


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
    raw = path.with_name(f"{path.name}.raw{os.getpid()}")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    data = path.with_name(f"{path.name}.{os.getpid()}.data")  # named in the model: renamed with it, never
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # nn.MultiheadAttention's fused inference kernel has no ONNX form; its plain path has
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it bakes in
            torch.onnx.export(
                _Tower().eval(),
                example,
                str(raw),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes={**dynamic, **{name: {0: "n"} for name in outputs}},
                opset_version=OPSET,
                dynamo=False,
            )
        _optimise(raw, tmp, data)
        for old in path.parent.glob(f"{path.name}.*.data"):  # a previous export's weights
            if old != data:
                old.unlink(missing_ok=True)
        os.replace(tmp, path)
    except Exception:
        for f in (tmp, data):
            f.unlink(missing_ok=True)
        return False
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        raw.unlink(missing_ok=True)
    for stale in path.parent.glob(f"{kind}-{fingerprint}-v*.onnx"):  # an older EXPORT_VERSION's file
        if stale != path:
            remove(stale)
    return True


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Standard output (the file descriptor: the exporter prints its graph from C++ on an operator it cannot
    export) sent nowhere, so that it never lands in the middle of a command's ``--json``."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1 (a closed or replaced stdout): nothing to guard
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _optimise(raw: Path, out: Path, data: Path) -> None:
    """ONNX Runtime's portable optimisations applied once to ``raw``, written to ``out`` with the weights in
    ``data`` (same folder)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # not ALL: CPU-specific
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", data.name)
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(raw), opts, providers=["CPUExecutionProvider"])
