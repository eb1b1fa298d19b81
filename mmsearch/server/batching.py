"""Dynamic micro-batching: searches that arrive together are answered together.

Every search of the server goes through one :class:`Batcher`. Its worker thread is the only thread that
searches (it owns the engine's search caches, so nothing else needs a lock for them): it takes every
query queued while it was busy, up to ``max_batch``, and runs them as one
:meth:`~mmsearch.engine.Engine.search_many` (one encoder call, one FAISS search per space, all threads),
then hands each request its own answer. A query that finds the worker idle runs at once, alone, on one
thread, so one client waits for nothing. Search requests count as arriving from their first byte
(:class:`Arrivals`), and a batch waits for those not queued yet, and for as many as the last batch held
(clients answered together come back together, but over 2 cores their next requests trickle in over
20-40 ms: with a 5 ms window, 16 clients split into batches of 2 and 14, at 40 ms they stay one batch of
16 and the server answers 1.6x more), for ``window_s`` at most and half the last batch's run time.
``max_batch=1`` is the serialised server (one query at a time), the baseline the benchmark measures.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from typing import TYPE_CHECKING

from mmsearch.errors import MmsearchError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from mmsearch.search import Hit, Query

# The ticket of the search request this context serves (set by Arrivals, read where its query is queued).
TICKET: ContextVar[list[bool] | None] = ContextVar("mmsearch_search_ticket", default=None)

RunMany = Callable[[Sequence["Query"]], "Sequence[list[Hit] | MmsearchError]"]

IDLE_EXIT_S = 30.0  # the worker thread ends after this long with nothing to do (and starts again on demand)


class Batcher:
    """Runs searches in batches on one worker thread.

    Args:
        run_many: Answers a batch of queries, each with its hits or its own error.
        max_batch: The most queries answered together (1: one at a time).
        window_s: The most a batch waits for requests on their way (and never more than half the time the
            last batch ran: waiting is worth it only next to the work it saves).
    """

    def __init__(self, run_many: RunMany, max_batch: int = 32, window_s: float = 0.05) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_many = run_many
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: deque[tuple[Query, Future[list[Hit]]]] = deque()
        self._cv = threading.Condition()
        self._arriving = 0  # requests counted by expect() whose query is not queued yet
        self._worker: threading.Thread | None = None
        self._last = 1  # the size of the last batch
        self._last_s = 0.0  # and how long it ran
        self.batches: deque[int] = deque(maxlen=10_000)  # sizes of the latest batches (/health shows them)

    def expect(self) -> list[bool]:
        """Count a search request that has started arriving (its body is on its way, or being decoded); a
        batch forming meanwhile waits a moment for it. Returns its ticket for :meth:`release`."""
        with self._cv:
            self._arriving += 1
        return [True]

    def release(self, ticket: list[bool] | None) -> None:
        """Stop counting a request (its query is queued, or it ended without one). Idempotent."""
        with self._cv:
            if ticket and ticket[0]:
                ticket[0] = False
                self._arriving -= 1
                self._cv.notify_all()

    def search(self, query: Query) -> list[Hit]:
        """The hits of ``query``, from the batch it joins.

        Raises:
            MmsearchError: what searching ``query`` alone raises.
        """
        fut: Future[list[Hit]] = Future()
        with self._cv:
            self._queue.append((query, fut))
            self.release(TICKET.get())  # queued: no longer arriving (the condition's lock is re-entrant)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="mmsearch-search", daemon=True)
                self._worker.start()
            self._cv.notify_all()
        return fut.result()

    def _take(self) -> list[tuple[Query, Future[list[Hit]]]] | None:
        """The next batch, or None after ``IDLE_EXIT_S`` with nothing queued."""
        with self._cv:
            if not self._cv.wait_for(lambda: bool(self._queue), timeout=IDLE_EXIT_S):
                self._worker = None  # the caller queues again under the lock and sees no worker
                return None
            # Clients answered together come back together: wait (a moment at most) for as many as the
            # last batch held, and for requests already on their way.
            expect = min(self.max_batch, self._last)
            deadline = time.monotonic() + min(self.window_s, self._last_s / 2)
            while len(self._queue) < self.max_batch and (self._arriving > 0 or len(self._queue) < expect):
                left = deadline - time.monotonic()
                if left <= 0 or not self._cv.wait(left):
                    break
            n = self._last = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            self.batches.append(len(batch))
            started = time.monotonic()
            answers: Sequence[list[Hit] | BaseException]
            try:
                answers = self._run_many([q for q, _ in batch])
                self._last_s = time.monotonic() - started
            except Exception:
                # an unexpected failure (a decoder crashing on one hostile upload): each query again
                # alone, so only the one that fails gets the error
                answers = [self._alone(q) for q, _ in batch]
            for (_, fut), answer in zip(batch, answers, strict=True):
                if isinstance(answer, BaseException):
                    fut.set_exception(answer)
                else:
                    fut.set_result(answer)

    def _alone(self, query: Query) -> list[Hit] | BaseException:
        try:
            return self._run_many([query])[0]
        except Exception as e:  # the waiting request gets it (a 500, logged), never a hang
            return e


class Arrivals:
    """ASGI middleware: a POST to a search route counts as arriving (:meth:`Batcher.expect`) from the
    moment its body is in (the Guard outside it reads bodies whole first, so a client dripping one does
    not hold batches back) until its query is queued or it ends. A request without the token counts too,
    until its route refuses it: at worst a batch waits its window."""

    def __init__(self, app: ASGIApp, batcher: Batcher, paths: Sequence[str] = ("/search", "/knn-service")) -> None:
        self.app = app
        self.batcher = batcher
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        ticket = self.batcher.expect()
        token = TICKET.set(ticket)  # copied into the worker thread the route runs in
        try:
            await self.app(scope, receive, send)
        finally:
            TICKET.reset(token)
            self.batcher.release(ticket)
