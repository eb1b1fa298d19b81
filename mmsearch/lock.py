"""One writer per index: an advisory lock on ``INDEX_DIR/index.lock`` held for a whole `index` run.

``flock`` locks belong to the open file, so the kernel releases them when the process dies, even
by SIGKILL: a crashed run never leaves a stale lock behind. Readers (queries, the server) take no
lock: SQLite's WAL gives them a consistent snapshot while a run writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from mmsearch.errors import IndexBusyError, StoreWriteError

FILENAME = "index.lock"
SAVE_FILENAME = "save.lock"


class IndexLock:
    """``with IndexLock(dir, wait=0):`` — raises IndexBusyError if another run holds it after ``wait`` s."""

    def __init__(self, index_dir: Path, wait: float = 0.0) -> None:
        self.path = index_dir / FILENAME
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> IndexLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (documented)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreWriteError(f"cannot write index {self.path.parent}: {e.strerror or e}") from e
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise IndexBusyError(
                        f"another `mmsearch index` (pid {holder}) is writing {self.path.parent}: wait for it to "
                        "finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass  # the pid is only for the message another run shows; the lock holds without it
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class SaveLock:
    """The short lock around replacing FAISS files (``INDEX_DIR/save.lock``).

    The writer takes it for each save; a reader that rebuilt a stale file takes it without blocking, or
    skips saving. Readers never touch ``index.lock``, so they never make an `index` run refuse to start.
    """

    def __init__(self, index_dir: Path, blocking: bool = True) -> None:
        self.path = index_dir / SAVE_FILENAME
        self.blocking = blocking
        self._fd: int | None = None

    def __enter__(self) -> SaveLock:
        try:
            import fcntl
        except ImportError:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreWriteError(f"cannot write index {self.path.parent}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise IndexBusyError(f"another process is saving {self.path.parent}") from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
