"""Where the models and the FAISS search run: ``$MMSEARCH_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
set by ``--device`` on the commands that embed or search (and handed to Ray workers with the other
``MMSEARCH_*`` settings).

``auto`` (the default): the models on the GPU when torch sees one, FAISS indexes cloned to the GPUs for
search when the installed FAISS has GPU support and sees one (``mmsearch[gpu]``), the CPU otherwise.
``cpu`` keeps both off the GPU; ``cuda`` requires it and says so when there is none, and also moves the
towers that run in ONNX Runtime on the CPU by default (MiniLM's text tower) to torch on the GPU. builtin's
small CNN stays on the CPU whatever is asked (decoding, not its 0.4 GFLOP pass, bounds it).
"""

from __future__ import annotations

import os

from mmsearch.errors import MmsearchError

ENV = "MMSEARCH_DEVICE"


def requested() -> str:
    """What was asked for: ``auto``, ``cpu`` or a ``cuda`` device.

    Raises:
        MmsearchError: anything else.
    """
    raw = os.environ.get(ENV, "").strip().lower() or "auto"
    if raw in ("auto", "cpu") or raw == "cuda" or (raw.startswith("cuda:") and raw[5:].isdigit()):
        return raw
    raise MmsearchError(f"unknown device {raw!r}: use auto, cpu, cuda or cuda:N")


def set_device(device: str | None) -> None:
    """Ask for a device for this process (and the workers it starts); None leaves the setting alone.

    Raises:
        MmsearchError: an unknown device name, or a GPU asked for where torch sees none.
    """
    if device is None:
        return
    was = os.environ.get(ENV)
    os.environ[ENV] = device
    try:
        if requested().startswith("cuda"):
            torch_device()  # said now, in one line, not after the walk when a model loads (or never)
    except MmsearchError:
        if was is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = was
        raise


def torch_device() -> str:
    """The torch device the models load on.

    Raises:
        MmsearchError: a GPU was asked for and torch sees none.
    """
    want = requested()
    if want == "cpu":
        return "cpu"  # without importing torch (a query whose towers run in ONNX Runtime never needs it)
    import torch

    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise MmsearchError(f"--device {want}: torch sees no GPU (a CUDA build of torch and a driver are needed)")
    return want


def faiss_gpus() -> int:
    """How many GPUs FAISS may clone indexes to for search (0: search on the CPU)."""
    if requested() == "cpu":
        return 0
    import faiss

    if not hasattr(faiss, "index_cpu_to_all_gpus"):  # a CPU-only FAISS build
        return 0
    return int(faiss.get_num_gpus())
