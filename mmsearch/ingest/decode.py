"""The mapper's first half: open, hash and decode files in worker threads, ahead of the model.

Every file is opened here, through :func:`mmsearch.files.open_regular` (never blocking, never outside
the indexed roots), and handed to its modality's ``read`` step. The workers are daemon threads: an
interrupted run cancels what has not started and never waits for a thread stuck in a read.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, BinaryIO

from mmsearch import files
from mmsearch.errors import MediaError
from mmsearch.files import clamp_int64, file_version
from mmsearch.ingest.walk import Candidate
from mmsearch.modalities import Modality, Pending, ReadJob
from mmsearch.modalities.text import MAX_TEXT_BYTES, decode_text

STOP_WAIT_S = 1.5  # an interrupted run waits this long for the files its threads are on


class Workers:
    """Decode threads that never keep the process alive.

    A ``ThreadPoolExecutor``'s threads are joined at interpreter exit, so one worker stuck in a read
    (a network share that stopped answering) would keep a Ctrl-C'd run from ending. These are daemon
    threads: an interrupted run cancels what has not started and leaves without waiting.
    """

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                fut.set_exception(e)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the threads, waiting at most ``timeout`` seconds (None: until they finish) for the files
        they are on: a thread inside a native library (OCR, a decoder) at interpreter exit aborts the
        process, while one stuck in a read is left behind."""
        import time

        for _ in self._threads:
            self._jobs.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


class Decoder:
    """Reads candidates into :class:`Pending` items, in order, ``window`` files ahead of the consumer.

    Args:
        modalities: By name, the modalities of the candidates.
        jobs: By modality, what its read step may use (reusable vectors, decode size, OCR, the stop flag).
        open_file: How the run opens a file of its tree.
        workers: Threads.
        window: How many files may be read ahead.
    """

    def __init__(
        self,
        modalities: Mapping[str, Modality],
        jobs: Mapping[str, ReadJob],
        open_file: Callable[[str], BinaryIO],
        workers: int,
        window: int,
    ) -> None:
        self.modalities = modalities
        self.jobs = jobs
        self.open = open_file
        self.workers = workers
        self.window = window
        self.stopped = threading.Event()

    def read(self, cand: Candidate) -> Pending:
        """One file (in a worker thread).

        Raises:
            MediaError: skipped, with the reason.
        """
        if self.stopped.is_set():
            raise MediaError("interrupted")
        with self.open(cand.path) as f:
            st = os.fstat(f.fileno())
            size, mtime_ns = file_version(st)
            item = Pending(
                cand.path,
                cand.modality,
                size,
                mtime_ns,
                clamp_int64(st.st_ino),
                caption_path=cand.caption_path,
                caption_sig=cand.caption_sig,
            )
            self.modalities[cand.modality].read(f, item, self.jobs[cand.modality])
        if cand.caption_path:
            item.caption = read_caption(self.open, cand.caption_path)
        return item

    def run(self, todo: Sequence[Candidate]) -> Iterator[tuple[Candidate, Pending | MediaError]]:
        """(candidate, its item or the reason it was skipped), in ``todo`` order."""
        pool = Workers(self.workers, "mmsearch-decode")
        inflight: list[tuple[Candidate, Future[Pending]]] = []
        it = iter(todo)
        finished = False
        try:
            while True:
                while len(inflight) < self.window:
                    cand = next(it, None)
                    if cand is None:
                        break
                    inflight.append((cand, pool.submit(self.read, cand)))
                if not inflight:
                    break
                cand, fut = inflight.pop(0)
                try:
                    yield cand, fut.result()
                except MediaError as e:
                    yield cand, e
            finished = True
        finally:
            # interrupted (Ctrl-C, a write error): what has not started never will, and a worker stuck in a
            # read does not hold the run; the batches committed so far stay
            self.stopped.set()
            for _, f in inflight:
                f.cancel()
            pool.shutdown(None if finished else STOP_WAIT_S)


def read_caption(open_file: Callable[[str], BinaryIO], path: str) -> str | None:
    """A sidecar caption's text (its first MiB); None when it cannot be read as text (binary, a pipe)."""
    try:
        with open_file(path) as f:
            return decode_text(f.read(MAX_TEXT_BYTES))
    except (OSError, MediaError):
        return None


def safe_opener(follow_symlinks: bool, roots: Sequence[str]) -> Callable[[str], BinaryIO]:
    """How a run opens the files of its tree (looked up on ``mmsearch.files`` at call time, so tests
    can stand in for it)."""

    def opener(path: str) -> BinaryIO:
        return files.open_regular(path, follow_symlinks=follow_symlinks, roots=roots)

    return opener
