"""Process memory habits: keep freed blocks for speed while a model runs, hand big ones back after."""

from __future__ import annotations

import sys


def keep_freed_memory() -> None:
    """Stop glibc from handing large freed blocks back to the kernel (once per process, Linux only).

    A CPU forward pass allocates activations of tens of MB per layer; above glibc's mmap threshold
    (32 MiB at most) each one is a fresh mmap whose pages the kernel faults in and zeroes, then an
    munmap. Measured on builtin (2 cores, batch 32): half the CPU time was spent in the kernel, and
    keeping freed blocks in the heap makes the model ~2.8x faster (bench/bench_flops.py). Memory
    then stays at the peak working set of a batch instead of shrinking between batches.
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: heap, not mmap, up to 1 GiB blocks
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass  # not glibc (musl, ...): nothing to tune


_malloc_tuned = False


def trim_memory() -> None:
    """Give free heap back to the kernel now (glibc ``malloc_trim``), e.g. after decoding a huge picture.

    :func:`keep_freed_memory` makes glibc keep up to 1 GiB of freed heap for speed; a long-running
    server that decoded a 9000x9000 PNG for one request must not hold that peak forever.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20}
_UNITS |= {"g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``8G``, ``512MB``, ``1.5GiB``, ``1000000`` (binary units; ``0``: none).

    Raises:
        MmsearchError: not a size.
    """
    import re

    from mmsearch.errors import MmsearchError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise MmsearchError(f"not a size: {text!r} (e.g. 8G, 512M)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
