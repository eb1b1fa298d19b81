"""`mmsearch serve --workers N`: N server processes on one listening socket (uvicorn's own supervisor).

One process answers searches on one worker thread and its Python (HTTP, re-scoring, fusion) holds one
GIL, so while it gathers the next batch (responses out, requests in: ~25 ms of 16) its search thread
waits, and while it searches its event loop waits. Two processes overlap the two: measured at 100k items
on 2 cores, 16 clients, two processes of one thread each answered 119 QPS where one process of two threads
answered 103 (three interleaved rounds). Each process opens the index read-only: the FAISS files are
memory-mapped, so their pages are shared; the model is loaded once per process.

The parent binds the socket, then uvicorn's supervisor (``uvicorn.run(workers=N)``) spawns the workers,
restarts one that dies, and stops them all on Ctrl-C or SIGTERM. Each worker builds its app from the
options the parent left in its environment (:func:`app_from_env`) and gets ``1/N`` of the thread budget.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmsearch import threads
from mmsearch.errors import MmsearchError

if TYPE_CHECKING:
    from fastapi import FastAPI

OPTIONS_ENV = "MMSEARCH_SERVE_OPTIONS"


def app_from_env() -> FastAPI:
    """The app of one worker: :func:`~mmsearch.server.create_app` with the options in ``$MMSEARCH_SERVE_OPTIONS``."""
    from mmsearch.server.app import create_app

    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        raise MmsearchError(f"${OPTIONS_ENV} is not set: this factory is for the workers `mmsearch serve` starts")
    return create_app(**json.loads(raw))


def run_workers(
    workers: int,
    host: str,
    port: int,
    options: dict[str, Any],
    factory: str = "mmsearch.server.workers:app_from_env",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve with ``workers`` processes until Ctrl-C or SIGTERM.

    Args:
        options: Keyword arguments of :func:`~mmsearch.server.create_app` (JSON-serialisable), for every
            worker.
        factory: ``module:function`` each worker calls for its app (:func:`app_from_env`, or a wrapper
            that turns its errors into the exit uvicorn reads as "failed to start": the CLI's).
        on_ready: Called (from another thread) once a worker first answers.

    Raises:
        MmsearchError: the address cannot be bound.
    """
    import uvicorn

    from mmsearch.server.protocol import server_options

    if workers < 2:
        raise ValueError("run_workers is for 2 or more workers")
    os.environ[OPTIONS_ENV] = json.dumps(options)
    # each worker's torch, FAISS and ONNX Runtime pools: together, the budget of the machine
    os.environ["MMSEARCH_THREADS"] = str(max(1, threads.budget() // workers))
    # uvicorn's supervisor returns quietly when a worker fails before serving (a model it cannot load):
    # that is an error here unless some worker answered first
    answered, stop = threading.Event(), threading.Event()
    probe = threading.Thread(target=_wait_for_an_answer, args=(host, port, answered, stop, on_ready), daemon=True)
    probe.start()
    try:
        uvicorn.run(factory, factory=True, workers=workers, **server_options(host, port))
    except SystemExit as e:  # uvicorn has logged why (the port is in use, say) and exits
        if e.code not in (0, None):
            raise MmsearchError(f"cannot serve on {host}:{port}: the address is in use or not this machine's") from e
    finally:
        stop.set()
    if not answered.is_set():
        raise MmsearchError("the server stopped before any worker served (the messages above say why)")


def _wait_for_an_answer(
    host: str, port: int, answered: threading.Event, stop: threading.Event, on_ready: Callable[[], None] | None
) -> None:
    """Set ``answered`` once anything answers HTTP on the port (a refusal too: a worker is up)."""
    import urllib.error
    import urllib.request

    where = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://{where}:{port}/health", timeout=2):
                pass
        except urllib.error.HTTPError:
            pass  # 401 without the token, 400 for a Host it does not serve: still a worker answering
        except OSError:
            stop.wait(0.3)
            continue
        answered.set()
        if on_ready is not None:
            on_ready()
        return
