"""One thread budget for the native thread pools a process holds: torch's OpenMP, FAISS's OpenMP (and
the OpenBLAS inside FAISS, which follows it), and numpy's OpenBLAS.

The wheels ship three runtimes, each sized to every core, so on a small machine they fight: measured on
2 cores, a warm text query at 100k items took 99 ms with torch and FAISS at 2 threads and 31 ms with both
at 1; and numpy's OpenBLAS threads spin for a while after every product, so a server answering one client
burnt both cores (40 ms of CPU per 20 ms request). The rule here: numpy's BLAS always runs on the calling
thread (its products here are small); one query runs on one thread (``narrow``); work done in bulk (a
batch of queries in the server, an index run's encoder batches) gets the whole budget (``wide``).

OpenMP's thread count is a per-thread setting (each OS thread that calls into OpenMP starts from the
default), so :func:`use` is called by the thread about to do the work, and remembers per thread what it
set. Libraries not imported yet are left alone: the next call sets them.
"""

from __future__ import annotations

import os
import sys
import threading

_applied = threading.local()
_numpy_done = threading.Event()


def budget() -> int:
    """Threads this process may use: ``$MMSEARCH_THREADS``, else the CPUs it may run on."""
    raw = os.environ.get("MMSEARCH_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def use(n: int) -> None:
    """Size torch's and FAISS's pools to ``n`` threads for work this thread runs next."""
    _numpy_blas_single()
    done: dict[str, int] = getattr(_applied, "n", None) or {}
    _applied.n = done
    if "torch" in sys.modules and done.get("torch") != n:
        import torch

        torch.set_num_threads(n)
        done["torch"] = n
    if "faiss" in sys.modules and done.get("faiss") != n:
        import faiss

        faiss.omp_set_num_threads(n)
        done["faiss"] = n


def narrow() -> None:
    """One thread: a single query, whose pieces are too small to share out."""
    use(1)


def wide() -> None:
    """The whole budget: a batch."""
    use(budget())


def _numpy_blas_single() -> None:
    """numpy's own OpenBLAS (pthreads, one setting for the whole process) on one thread, once. FAISS's
    OpenBLAS (an OpenMP build) is left to follow FAISS's per-thread setting."""
    if _numpy_done.is_set():
        return
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and "faiss" not in lib.filepath:
            lib.set_num_threads(1)
    _numpy_done.set()
