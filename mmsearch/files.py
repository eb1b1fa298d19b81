"""Opening files that someone else may control: never block, never leave the indexed tree, never read unbounded.

Every file mmsearch reads while indexing or serves over HTTP is opened here. Between the walk that found
a file and the moment it is read, anyone who can write the folder may swap it for a named pipe (an
``open()`` that blocks forever), a device (``/dev/zero`` reads until memory runs out) or a symbolic link to
a file outside the tree (``/etc/passwd``). :func:`open_regular` checks the *opened descriptor*, not the
name, so no swap between the check and the read can win:

- ``O_NONBLOCK``: opening a FIFO returns at once; ``fstat`` then refuses anything but a regular file.
- ``O_NOFOLLOW`` unless links are followed; either way, when the indexed roots are given, the descriptor's
  real path must lie under one of them (a swapped parent folder is caught too).
- :func:`file_version` clamps what ``stat`` says to what SQLite can store (an mtime after 2262 overflows
  a 64-bit nanosecond count).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

from mmsearch.errors import MediaError

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
HASH_CHUNK = 1 << 20


def clamp_int64(value: int) -> int:
    """``value`` limited to SQLite's INTEGER range (a file dated 2300 has an mtime_ns over 2**63)."""
    return max(INT64_MIN, min(INT64_MAX, int(value)))


def file_version(st: os.stat_result) -> tuple[int, int]:
    """(size, mtime_ns): what must not move while a file is read, and what the index remembers of it.

    Both are clamped to 64 bits, so any stat value can be stored and compared.
    """
    return clamp_int64(st.st_size), clamp_int64(st.st_mtime_ns)


def printable_path(path: str) -> str:
    """A path as text: bytes that are not UTF-8 (``surrogateescape``) shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def under(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or inside one (plain string test on absolute paths)."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def real_path_of(fd: int, fallback: str) -> str:
    """The path the kernel resolved for an open descriptor (``/proc/self/fd``), else ``realpath``."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def open_regular(
    path: str | os.PathLike[str],
    *,
    follow_symlinks: bool = False,
    roots: Sequence[str] | None = None,
) -> BinaryIO:
    """Open a regular file for reading without ever blocking or leaving ``roots``.

    Args:
        path: The file.
        follow_symlinks: Follow a symbolic link in the last component (parents are always resolved by the
            kernel; ``roots`` is what keeps them inside the tree).
        roots: Real (resolved) folders the file must lie in; None for files the user named themselves.

    Raises:
        MediaError: cannot be opened, is a link (when not followed), is not a regular file (a pipe, a
            device, a socket, a folder), or resolves outside ``roots``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise MediaError("is a symbolic link (not followed without --follow-symlinks)") from e
        raise MediaError(f"cannot read: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe, device or socket"
            raise MediaError(f"not a regular file ({kind})")
        if roots is not None:
            real = real_path_of(fd, os.fspath(path))
            if not under(real, roots):
                raise MediaError(f"leads outside the indexed folders (to {printable_path(real)})")
        if flags & getattr(os, "O_NONBLOCK", 0):
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_stream(f: BinaryIO, size: int, chunk: int = HASH_CHUNK) -> tuple[str, int]:
    """(blake2b-160 hex digest, bytes read) of the next ``size`` bytes of ``f``, read in chunks.

    Memory stays at ``chunk``, and a file that grows while it is read (still being written) is read only
    as far as it was long when opened, never forever; the caller compares sizes to see it changed.
    """
    h = hashlib.blake2b(digest_size=20)
    n = 0
    while n < size and (block := f.read(min(chunk, size - n))):
        h.update(block)
        n += len(block)
    if n == size and f.read(1):  # longer than it was: changed while read
        n += 1
    return h.hexdigest(), n


def prefix_hash(data: bytes, size: int) -> str:
    """The content hash of a file of which only ``data`` (its first bytes) is used.

    Equal to the whole-file hash when ``data`` is the whole file; otherwise the size is hashed in too, so
    two files share a hash only when what is used of them (and their size) is the same.
    """
    h = hashlib.blake2b(data, digest_size=20)
    if len(data) < size:
        h.update(b"\0mmsearch-prefix-of:%d" % size)
    return h.hexdigest()
