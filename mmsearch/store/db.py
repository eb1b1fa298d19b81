"""The Store: every read and write of the SQLite database goes through here.

Reads run on the standard library's ``sqlite3`` (one connection per thread), so a query process never
imports SQLAlchemy (~0.35-0.45 s of a cold query: most of what is left of one); writes and schema migrations
go through SQLAlchemy 2.0's ORM (:mod:`mmsearch.store.writes`, imported on the first write). Both open the
same file in WAL mode with the same pragmas.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from mmsearch.errors import IndexCorruptError, SchemaError
from mmsearch.store.migrations import SCHEMA_VERSION
from mmsearch.store.records import (
    ITEM_COLUMNS,
    Attrs,
    ItemRecord,
    ItemRow,
    KnownFile,
    Reusable,
    SegmentRecord,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mmsearch.store.writes import Writer

# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
DAMAGED = (11, 26)
_ITEM_SELECT = ", ".join(f"items.{c}" for c in ITEM_COLUMNS)


def damaged_message(path: Path, orig: BaseException) -> str:
    return (
        f"cannot read index database {path}: it is damaged ({orig}); move the index folder away and "
        "run `mmsearch index` again (the files are re-read; nothing of theirs is lost)"
    )


def attrs_of(item: ItemRow) -> Attrs:
    """An item row's attributes as a record."""
    return Attrs(
        item.width, item.height, item.duration, item.excerpt, item.ocr_text, item.taken_at, dict(item.info or {})
    )


def _item(row: Sequence[Any]) -> ItemRow:
    values = list(row)
    info = values[-1]
    values[-1] = json.loads(info) if isinstance(info, str) else info  # the ORM's JSON column: text
    return ItemRow(*values)


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    """Ids in lists of at most ``size``: SQLite caps the parameters of one statement."""
    for start in range(0, len(ids), size):
        yield [int(i) for i in ids[start : start + size]]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Store:
    """SQLite file ``index.sqlite3`` inside an index directory."""

    FILENAME = "index.sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._writer: Writer | None = None
        # A folder this process cannot write (a read-only share, another user's index) is still
        # searchable: SQLite opens it immutable, since nobody can change it under us either.
        self.read_only = path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        wal = path.with_name(path.name + "-wal")
        # immutable skips the WAL: only safe when a clean close left nothing in it
        self._immutable = self.read_only and (not wal.exists() or wal.stat().st_size == 0)
        try:
            self._migrate()
        except IndexCorruptError:
            self.close()
            raise
        except sqlite3.DatabaseError as e:  # cannot be opened at all (a folder in its place, no permission)
            self.close()
            raise IndexCorruptError(f"cannot read index database {path}: {e}") from e

    # -- connections --------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine writes go through (made on first use: a query never needs it)."""
        with self._lock:
            if self._engine is None:
                from mmsearch.store.writes import make_engine

                self._engine = make_engine(self.path, self.read_only, self._immutable)
            return self._engine

    def _writes(self) -> Writer:
        if self._writer is None:
            from mmsearch.store.writes import Writer

            self._writer = Writer(self)
        return self._writer

    def _connect(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each read its own view, unless in a snapshot)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            flags = "mode=ro" + ("&immutable=1" if self._immutable else "")
            conn = sqlite3.connect(f"file:{quote(str(self.path))}?{flags}", uri=True, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
        else:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = (), conn: sqlite3.Connection | None = None) -> list[Any]:
        """All rows of one read, on this thread's snapshot if one is open."""
        try:
            return (conn or self._connect()).execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorcode", None) in DAMAGED:
                raise IndexCorruptError(damaged_message(self.path, e)) from e
            raise

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # -- schema -------------------------------------------------------------------------------
    def _version(self) -> int | None:
        """The schema version recorded in the file; None for a new, empty database."""
        if self._one("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'") is None:
            return None
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        version = self._version()
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaError(
                f"index {self.path.parent} has schema version {version}; this mmsearch reads up to "
                f"{SCHEMA_VERSION}: upgrade mmsearch"
            )
        if self.read_only:
            raise SchemaError(
                f"index {self.path.parent} has schema version {version or 0} and cannot be upgraded to "
                f"{SCHEMA_VERSION} in a read-only folder: open it once where it can be written"
            )
        from mmsearch.store.writes import migrate

        migrate(self.engine)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            engine, self._engine = self._engine, None
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        if engine is not None:
            engine.dispose()

    # -- read snapshots -----------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this thread see one committed state until the block ends.

        SQLite in WAL mode gives a read transaction a fixed view of the database: a writer in another
        process can commit meanwhile, and this block sees none of it. Nested calls share the outer one.
        """
        if getattr(self._local, "snapshot", False):
            yield
            return
        conn = self._connect()
        conn.execute("BEGIN")
        self._local.snapshot = True
        try:
            self._rows("SELECT value FROM meta LIMIT 1")  # the view is fixed at the first read
            yield
        finally:
            self._local.snapshot = False
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None or row[0] is None else self._meta_value(key, row[0])

    def _meta_value(self, key: str, raw: Any) -> Any:
        """A meta value as written (JSON); a value that is not (an edited or damaged file) is a corrupt index."""
        try:
            return json.loads(raw)
        except (TypeError, ValueError) as e:
            raise IndexCorruptError(f"{self.path}: meta {key!r} is not a value mmsearch wrote ({raw!r:.40})") from e

    def set_meta(self, **values: Any) -> None:
        self._writes().set_meta(values)

    def generation(self, space: str) -> int:
        key = f"generation:{space}"
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return 0 if row is None or row[0] is None else self._generation(key, row[0])

    def _generation(self, key: str, raw: Any) -> int:
        value = self._meta_value(key, raw)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IndexCorruptError(f"{self.path}: meta {key!r} is not a generation ({raw!r:.40})")
        return value

    def generations(self) -> dict[str, int]:
        """Every space's generation, in one read: any change to a space's vectors bumps its own."""
        rows = self._rows("SELECT key, value FROM meta WHERE key LIKE 'generation:%'")
        return {k.removeprefix("generation:"): self._generation(k, v) for k, v in rows}

    # -- reads --------------------------------------------------------------------------------
    def known_files(self) -> dict[str, KnownFile]:
        rows = self._rows("SELECT path, id, modality, size, mtime_ns, content_hash, caption_sig, inode FROM items")
        return {r[0]: KnownFile(*r[1:]) for r in rows}

    def check(self) -> None:
        """SQLite's ``quick_check`` of every page (a damaged file must not pass for a healthy one).

        Raises:
            IndexCorruptError: the database is damaged.
        """
        problems = [str(r[0]) for r in self._rows("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise IndexCorruptError(
                f"cannot read index database {self.path}: it is damaged ({problems[0]}); move the index folder "
                "away and run `mmsearch index` again (the files are re-read; nothing of theirs is lost)"
            )

    def count(self, space: str) -> int:
        """How many vectors ``space`` holds (an index range count, not a table scan)."""
        return int(self._one("SELECT count(*) FROM vectors WHERE space = ?", (space,))[0] or 0)

    def vectors_near_ids(self, space: str, ids: Sequence[int]) -> list[tuple[int, np.ndarray]]:
        """For each id, the first vector of ``space`` at or after it: a cheap spread sample for checks."""
        out: dict[int, np.ndarray] = {}
        for i in ids:
            row = self._one(
                "SELECT item_id, data FROM vectors WHERE space = ? AND item_id >= ? ORDER BY item_id LIMIT 1",
                (space, int(i)),
            )
            if row is not None:
                out[int(row[0])] = np.frombuffer(row[1], dtype=np.float32)
        return sorted(out.items())

    def id_range(self, space: str) -> tuple[int, int] | None:
        """(smallest, largest) item id holding a vector in ``space``; None when it holds none."""
        lo = self._one("SELECT min(item_id) FROM vectors WHERE space = ?", (space,))[0]
        hi = self._one("SELECT max(item_id) FROM vectors WHERE space = ?", (space,))[0]
        return None if lo is None or hi is None else (int(lo), int(hi))

    def reusable(self, content_hash: str, modality: str) -> Reusable | None:
        """What an indexed item with the same content holds (a duplicate or a renamed file): its own
        vector, its attributes and its segments, so the copy needs no decoding and no model call."""
        row = self._one(
            f"SELECT vectors.data, {_ITEM_SELECT} FROM vectors JOIN items ON items.id = vectors.item_id "
            "WHERE items.content_hash = ? AND items.modality = ? AND vectors.space = ? LIMIT 1",
            (content_hash, modality, modality),
        )
        if row is None:
            return None
        item = _item(row[1:])
        others = self._rows("SELECT space, data FROM vectors WHERE item_id = ? AND space != ?", (item.id, modality))
        vec = np.frombuffer(row[0], dtype=np.float32).copy()
        extras = {str(sp): np.frombuffer(d, dtype=np.float32).copy() for sp, d in others}
        return Reusable(vec, attrs_of(item), self.segments(item.id), extras)

    def segments(self, item_id: int) -> list[SegmentRecord]:
        """An item's segments in time order (none for most kinds)."""
        rows = self._rows(
            'SELECT start, "end", kind, data, text FROM segments WHERE item_id = ? ORDER BY start, id', (int(item_id),)
        )
        return [SegmentRecord(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.float32).copy(), r[4]) for r in rows]

    def segments_of(self, ids: Sequence[int]) -> dict[int, list[SegmentRecord]]:
        """Several items' segments, in time order, read 500 ids per query."""
        out: dict[int, list[SegmentRecord]] = {}
        for chunk in _chunks(ids):
            rows = self._rows(
                f'SELECT item_id, start, "end", kind, data, text FROM segments WHERE item_id IN ({_marks(len(chunk))}) '
                "ORDER BY item_id, start, id",
                chunk,
            )
            for r in rows:
                rec = SegmentRecord(r[1], r[2], r[3], np.frombuffer(r[4], dtype=np.float32), r[5])
                out.setdefault(int(r[0]), []).append(rec)
        return out

    def get_items(self, ids: Sequence[int]) -> dict[int, ItemRow]:
        ids = [int(i) for i in ids if 0 <= int(i) < 2**63]  # anything else cannot be a row id
        out: dict[int, ItemRow] = {}
        for chunk in _chunks(ids):
            for row in self._rows(f"SELECT {_ITEM_SELECT} FROM items WHERE id IN ({_marks(len(chunk))})", chunk):
                item = _item(row)
                out[item.id] = item
        return out

    def counts(self) -> dict[str, int]:
        return {m: int(n) for m, n in self._rows("SELECT modality, count(*) FROM items GROUP BY modality")}

    def ids(self, space: str) -> np.ndarray:
        rows = self._rows("SELECT item_id FROM vectors WHERE space = ? ORDER BY item_id", (space,))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def iter_vectors(self, space: str, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of one space, in id order, with bounded memory: one view throughout (the
        thread's snapshot, else a connection of its own, so that a generator left unfinished holds no view
        the thread's other reads would see)."""
        own = None if getattr(self._local, "snapshot", False) else self._open()
        last = -1
        try:
            if own is not None:
                own.execute("BEGIN")
            while True:
                rows = self._rows(
                    "SELECT item_id, data FROM vectors WHERE space = ? AND item_id > ? ORDER BY item_id LIMIT ?",
                    (space, last, batch),
                    own,
                )
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
                yield ids, vecs
                last = int(ids[-1])
        finally:
            if own is not None:
                with self._lock:
                    if own in self._connections:
                        self._connections.remove(own)
                own.close()

    def _item_column(self, ids: Sequence[int], column: str) -> dict[int, Any]:
        """id -> one column of ``items``, read 500 ids per query."""
        out: dict[int, Any] = {}
        for chunk in _chunks(ids):
            out.update(dict(self._rows(f"SELECT id, {column} FROM items WHERE id IN ({_marks(len(chunk))})", chunk)))
        return out

    def modalities_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self._item_column(ids, "modality")

    def hashes_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self._item_column(ids, "content_hash")

    def filter_ids(
        self, modalities: Sequence[str], pattern: str | None, after: float | None, before: float | None
    ) -> np.ndarray:
        """Ids of items of these modalities whose path matches a glob and whose time is in range.

        Time: the EXIF capture time when the picture has one, else the file's mtime. A pattern
        without a slash also matches the file name alone (``*.png``).
        """
        modalities = list(modalities)
        sql = f"SELECT id FROM items WHERE modality IN ({_marks(len(modalities))})"
        params: list[Any] = [*modalities]
        if pattern:
            sql += " AND (path GLOB ?" + (" OR path GLOB ?)" if "/" not in pattern else ")")
            params += [pattern] + (["*/" + pattern] if "/" not in pattern else [])
        when = "coalesce(taken_at, mtime_ns / 1e9)"
        if after is not None:
            sql += f" AND {when} >= ?"
            params.append(after)
        if before is not None:
            sql += f" AND {when} < ?"
            params.append(before)
        return np.asarray([r[0] for r in self._rows(sql, params)], dtype=np.int64)

    def spaces_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """The spaces each item has a vector in."""
        out: dict[int, list[str]] = {}
        for chunk in _chunks(ids):
            for item_id, space in self._rows(
                f"SELECT item_id, space FROM vectors WHERE item_id IN ({_marks(len(chunk))})", chunk
            ):
                out.setdefault(item_id, []).append(space)
        return out

    def vectors_of(self, ids: Sequence[int], spaces: Sequence[str]) -> dict[tuple[int, str], np.ndarray]:
        """(item id, space) -> vector, for the given items and spaces (rescoring candidates)."""
        out: dict[tuple[int, str], np.ndarray] = {}
        spaces = list(spaces)
        if not ids or not spaces:
            return out
        for chunk in _chunks(ids):
            rows = self._rows(
                f"SELECT item_id, space, data FROM vectors WHERE item_id IN ({_marks(len(chunk))}) "
                f"AND space IN ({_marks(len(spaces))})",
                [*chunk, *spaces],
            )
            for item_id, space, data in rows:
                out[(item_id, space)] = np.frombuffer(data, dtype=np.float32)
        return out

    def sample_vectors(self, space: str, n: int = 1000) -> np.ndarray:
        """Up to ``n`` vectors of a space, for score calibration: those of the items with the smallest
        content hashes, never chosen by id, so an index rebuilt in another order (after a crash, from another
        walk) calibrates, and so scores, exactly alike.

        Bounded by what it returns: the content-hash index is walked in order and stops after ``n`` items
        of the space (no COUNT, no scan of the collection; a space held by few of the items walks further).
        """
        with self.snapshot():
            ids = [
                r[0]
                for r in self._rows(
                    "SELECT id FROM items WHERE EXISTS (SELECT 1 FROM vectors WHERE vectors.item_id = items.id "
                    "AND vectors.space = ?) ORDER BY content_hash, id LIMIT ?",
                    (space, int(n)),
                )
            ]
            if not ids:
                return np.zeros((0, 0), dtype=np.float32)
            data: dict[int, bytes] = {}
            for chunk in _chunks(ids):
                data.update(
                    self._rows(
                        f"SELECT item_id, data FROM vectors WHERE space = ? AND item_id IN ({_marks(len(chunk))})",
                        [space, *chunk],
                    )
                )
        return np.stack([np.frombuffer(data[i], dtype=np.float32) for i in ids if i in data])

    def spaces(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT space FROM vectors")]

    # -- writes (mmsearch.store.writes: SQLAlchemy) ---------------------------------------------
    def set_inodes(self, inodes: dict[int, int]) -> None:
        """Record inodes of unchanged items indexed before inodes were kept (one transaction)."""
        self._writes().set_inodes(inodes)

    def write_batch(self, records: Sequence[ItemRecord], replace_ids: dict[str, int]) -> list[int]:
        """Insert new items / overwrite changed ones in one transaction; returns their ids.

        ``replace_ids`` maps a path to the id it already has: a changed file keeps its id.
        """
        return self._writes().write_batch(records, replace_ids)

    def delete_items(self, ids: Sequence[int]) -> dict[str, list[int]]:
        """Delete items (and their vectors); returns the removed ids per space."""
        return self._writes().delete_items(ids)
