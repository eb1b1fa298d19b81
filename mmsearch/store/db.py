"""The Store: every read and write of the SQLite database goes through here."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, bindparam, create_engine, delete, event, exists, func, insert, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from mmsearch.errors import IndexCorruptError, SchemaError, StoreWriteError
from mmsearch.files import clamp_int64
from mmsearch.store.migrations import MIGRATIONS, SCHEMA_VERSION
from mmsearch.store.models import Item, Meta, Segment, Vector
from mmsearch.store.records import Attrs, ItemRecord, KnownFile, Reusable, SegmentRecord


def attrs_of(item: Item) -> Attrs:
    """An item row's attributes as a record."""
    return Attrs(
        item.width, item.height, item.duration, item.excerpt, item.ocr_text, item.taken_at, dict(item.info or {})
    )


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    """Ids in lists of at most ``size``: SQLite caps the parameters of one statement."""
    for start in range(0, len(ids), size):
        yield [int(i) for i in ids[start : start + size]]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGED = (11, 26)


def _damaged_database(path: Path) -> Any:
    """A ``handle_error`` hook: a damaged database file is an IndexCorruptError (one line, what to do),
    wherever the damage is met: opening, a query that reads a broken page, a write."""

    def hook(context: Any) -> None:
        orig = context.original_exception
        if isinstance(orig, sqlite3.DatabaseError) and getattr(orig, "sqlite_errorcode", None) in _DAMAGED:
            raise IndexCorruptError(
                f"cannot read index database {path}: it is damaged ({orig}); move the index folder away and "
                "run `mmsearch index` again (the files are re-read; nothing of theirs is lost)"
            ) from orig

    return hook


def _sqlite_read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """SQLite file ``index.sqlite3`` inside an index directory."""

    FILENAME = "index.sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # A folder this process cannot write (a read-only share, another user's index) is still
        # searchable: SQLite opens it immutable, since nobody can change it under us either.
        self.read_only = path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        if self.read_only:
            wal = path.with_name(path.name + "-wal")
            # immutable skips the WAL: only safe when a clean close left nothing in it
            immutable = "&immutable=1" if not wal.exists() or wal.stat().st_size == 0 else ""
            self.engine: Engine = create_engine(f"sqlite:///file:{path}?mode=ro{immutable}&uri=true")
            event.listen(self.engine, "connect", _sqlite_read_only_pragmas)
        else:
            self.engine = create_engine(f"sqlite:///{path}")
            event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "handle_error", _damaged_database(path))
        try:
            self._migrate()
        except DatabaseError as e:
            self.engine.dispose()
            raise IndexCorruptError(f"cannot read index database {path}: {e.orig}") from e

    # -- schema -------------------------------------------------------------------------------
    def _version(self, conn: Any) -> int | None:
        """The schema version recorded in the file; None for a new, empty database."""
        has_meta = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").first()
        if not has_meta:
            return None
        row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            version = self._version(conn)
            conn.rollback()
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
            # Creating or upgrading takes the write lock first, then looks again: two processes opening
            # a new index at once must not both create it. A new database is built by the same named
            # migrations an old one is upgraded by, so both reach the same schema.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            version = self._version(conn)
            if version is None or version < SCHEMA_VERSION:
                for number, (_name, migrate) in enumerate(MIGRATIONS, start=1):
                    if number > (version or 0):
                        migrate(conn)
                conn.execute(delete(Meta).where(Meta.key == "schema_version"))
                conn.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            conn.commit()

    def close(self) -> None:
        self.engine.dispose()

    # -- read snapshots -----------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this thread see one committed state until the block ends.

        SQLite in WAL mode gives a read transaction a fixed view of the database: a writer in another
        process can commit meanwhile, and this block sees none of it. Nested calls share the outer one.
        """
        if getattr(self._local, "session", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            # pysqlite opens no transaction for SELECTs by itself: without BEGIN each read is its own view
            conn.exec_driver_sql("BEGIN")
            session = Session(bind=conn, expire_on_commit=False)
            self._local.session = session
            try:
                session.scalar(select(Meta.value).limit(1))  # the view is fixed at the first read
                yield
            finally:
                self._local.session = None
                session.close()
                conn.rollback()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction; a failure to write (disk full, read-only folder) rolls it back whole."""
        try:
            with Session(self.engine) as s, s.begin():
                yield s
        except OperationalError as e:
            why = "the index folder is read-only" if self.read_only else str(e.orig)
            if "I/O error" in why or "full" in why:
                why += " (is the disk full?)"
            raise StoreWriteError(f"cannot write index database {self.path}: {why}") from e

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """The current snapshot's session, or a fresh one for a single read."""
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._session() as s:
            value = s.scalar(select(Meta.value).where(Meta.key == key))
        return default if value is None else json.loads(value)

    def set_meta(self, **values: Any) -> None:
        with self._write() as s:
            for key, value in values.items():
                s.merge(Meta(key=key, value=json.dumps(value)))

    def generation(self, space: str) -> int:
        return int(self.get_meta(f"generation:{space}", 0))

    def generations(self) -> dict[str, int]:
        """Every space's generation, in one read: any change to a space's vectors bumps its own."""
        with self._session() as s:
            rows = s.execute(select(Meta.key, Meta.value).where(Meta.key.like("generation:%"))).all()
        return {k.removeprefix("generation:"): int(json.loads(v)) for k, v in rows}

    @staticmethod
    def _bump(s: Session, spaces: Iterable[str]) -> None:
        for space in set(spaces):
            key = f"generation:{space}"
            current = s.scalar(select(Meta.value).where(Meta.key == key))
            s.merge(Meta(key=key, value=json.dumps(int(json.loads(current or "0")) + 1)))

    # -- reads --------------------------------------------------------------------------------
    def known_files(self) -> dict[str, KnownFile]:
        with self._session() as s:
            rows = s.execute(
                select(
                    Item.path,
                    Item.id,
                    Item.modality,
                    Item.size,
                    Item.mtime_ns,
                    Item.content_hash,
                    Item.caption_sig,
                    Item.inode,
                )
            )
            return {r[0]: KnownFile(*r[1:]) for r in rows}

    def check(self) -> None:
        """SQLite's ``quick_check`` of every page (a damaged file must not pass for a healthy one).

        Raises:
            IndexCorruptError: the database is damaged.
        """
        with self._session() as s:
            problems = [str(r) for r in s.scalars(text("PRAGMA quick_check(5)")).all()]
        if problems != ["ok"]:
            raise IndexCorruptError(
                f"cannot read index database {self.path}: it is damaged ({problems[0]}); move the index folder "
                "away and run `mmsearch index` again (the files are re-read; nothing of theirs is lost)"
            )

    def count(self, space: str) -> int:
        """How many vectors ``space`` holds (an index range count, not a table scan)."""
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(Vector).where(Vector.space == space)) or 0)

    def vectors_near_ids(self, space: str, ids: Sequence[int]) -> list[tuple[int, np.ndarray]]:
        """For each id, the first vector of ``space`` at or after it: a cheap spread sample for checks."""
        out: dict[int, np.ndarray] = {}
        with self._session() as s:
            for i in ids:
                row = s.execute(
                    select(Vector.item_id, Vector.data)
                    .where(Vector.space == space, Vector.item_id >= int(i))
                    .order_by(Vector.item_id)
                    .limit(1)
                ).first()
                if row is not None:
                    out[int(row[0])] = np.frombuffer(row[1], dtype=np.float32)
        return sorted(out.items())

    def id_range(self, space: str) -> tuple[int, int] | None:
        """(smallest, largest) item id holding a vector in ``space``; None when it holds none."""
        with self._session() as s:
            lo = s.scalar(select(func.min(Vector.item_id)).where(Vector.space == space))
            hi = s.scalar(select(func.max(Vector.item_id)).where(Vector.space == space))
        return None if lo is None or hi is None else (int(lo), int(hi))

    def reusable(self, content_hash: str, modality: str) -> Reusable | None:
        """What an indexed item with the same content holds (a duplicate or a renamed file): its own
        vector, its attributes and its segments, so the copy needs no decoding and no model call."""
        with self._session() as s:
            row = s.execute(
                select(Vector.data, Item)
                .join(Item, Item.id == Vector.item_id)
                .where(Item.content_hash == content_hash, Item.modality == modality, Vector.space == modality)
                .limit(1)
            ).first()
            if row is None:
                return None
            data, item = row
            attrs = attrs_of(item)
            item_id = item.id
            others = s.execute(
                select(Vector.space, Vector.data).where(Vector.item_id == item_id, Vector.space != modality)
            ).all()
        vec = np.frombuffer(data, dtype=np.float32).copy()
        extras = {str(sp): np.frombuffer(d, dtype=np.float32).copy() for sp, d in others}
        return Reusable(vec, attrs, self.segments(item_id), extras)

    def segments(self, item_id: int) -> list[SegmentRecord]:
        """An item's segments in time order (none for most kinds)."""
        with self._session() as s:
            rows = s.execute(
                select(Segment.start, Segment.end, Segment.kind, Segment.data, Segment.text)
                .where(Segment.item_id == int(item_id))
                .order_by(Segment.start, Segment.id)
            ).all()
        return [SegmentRecord(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.float32).copy(), r[4]) for r in rows]

    def segments_of(self, ids: Sequence[int]) -> dict[int, list[SegmentRecord]]:
        """Several items' segments, in time order, read 500 ids per query."""
        out: dict[int, list[SegmentRecord]] = {}
        if not ids:
            return out
        with self._session() as s:
            for chunk in _chunks(ids):
                rows = s.execute(
                    select(Segment.item_id, Segment.start, Segment.end, Segment.kind, Segment.data, Segment.text)
                    .where(Segment.item_id.in_(chunk))
                    .order_by(Segment.item_id, Segment.start, Segment.id)
                ).all()
                for r in rows:
                    rec = SegmentRecord(r[1], r[2], r[3], np.frombuffer(r[4], dtype=np.float32), r[5])
                    out.setdefault(int(r[0]), []).append(rec)
        return out

    def get_items(self, ids: Sequence[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids if 0 <= int(i) < 2**63]  # anything else cannot be a row id
        if not ids:
            return {}
        with self._session() as s:
            items = s.scalars(select(Item).where(Item.id.in_(ids))).all()
            for it in items:
                s.expunge(it)
        return {it.id: it for it in items}

    def counts(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(Item.modality, func.count()).group_by(Item.modality))
            return {m: int(n) for m, n in rows}

    def ids(self, space: str) -> np.ndarray:
        with self._session() as s:
            ids = s.scalars(select(Vector.item_id).where(Vector.space == space).order_by(Vector.item_id)).all()
        return np.asarray(ids, dtype=np.int64)

    def iter_vectors(self, space: str, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of one space, in id order, with bounded memory."""
        last = -1
        with self._session() as s:
            while True:
                rows = s.execute(
                    select(Vector.item_id, Vector.data)
                    .where(Vector.space == space, Vector.item_id > last)
                    .order_by(Vector.item_id)
                    .limit(batch)
                ).all()
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
                yield ids, vecs
                last = int(ids[-1])

    def _item_column(self, ids: Sequence[int], column: Any) -> dict[int, Any]:
        """id -> one column of ``items``, read 500 ids per query."""
        out: dict[int, Any] = {}
        with self._session() as s:
            for chunk in _chunks(ids):
                out.update({i: v for i, v in s.execute(select(Item.id, column).where(Item.id.in_(chunk)))})
        return out

    def modalities_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self._item_column(ids, Item.modality)

    def hashes_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self._item_column(ids, Item.content_hash)

    def filter_ids(
        self, modalities: Sequence[str], pattern: str | None, after: float | None, before: float | None
    ) -> np.ndarray:
        """Ids of items of these modalities whose path matches a glob and whose time is in range.

        Time: the EXIF capture time when the picture has one, else the file's mtime. A pattern
        without a slash also matches the file name alone (``*.png``).
        """
        from sqlalchemy import or_

        stmt = select(Item.id).where(Item.modality.in_(list(modalities)))
        if pattern:
            cond: Any = Item.path.op("GLOB")(pattern)
            if "/" not in pattern:
                cond = or_(cond, Item.path.op("GLOB")("*/" + pattern))
            stmt = stmt.where(cond)
        when = func.coalesce(Item.taken_at, Item.mtime_ns / 1e9)
        if after is not None:
            stmt = stmt.where(when >= after)
        if before is not None:
            stmt = stmt.where(when < before)
        with self._session() as s:
            return np.asarray(s.scalars(stmt).all(), dtype=np.int64)

    def spaces_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """The spaces each item has a vector in."""
        out: dict[int, list[str]] = {}
        with self._session() as s:
            for chunk in _chunks(ids):
                for item_id, space in s.execute(select(Vector.item_id, Vector.space).where(Vector.item_id.in_(chunk))):
                    out.setdefault(item_id, []).append(space)
        return out

    def vectors_of(self, ids: Sequence[int], spaces: Sequence[str]) -> dict[tuple[int, str], np.ndarray]:
        """(item id, space) -> vector, for the given items and spaces (rescoring candidates)."""
        out: dict[tuple[int, str], np.ndarray] = {}
        if not ids or not spaces:
            return out
        with self._session() as s:
            for chunk in _chunks(ids):
                rows = s.execute(
                    select(Vector.item_id, Vector.space, Vector.data).where(
                        Vector.item_id.in_(chunk), Vector.space.in_(list(spaces))
                    )
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
        with self._session() as s:
            has = exists().where(Vector.item_id == Item.id, Vector.space == space)
            ids = list(s.scalars(select(Item.id).where(has).order_by(Item.content_hash, Item.id).limit(n)))
            if not ids:
                return np.zeros((0, 0), dtype=np.float32)
            rows = s.execute(select(Vector.item_id, Vector.data).where(Vector.space == space, Vector.item_id.in_(ids)))
            data = {item_id: blob for item_id, blob in rows}
        return np.stack([np.frombuffer(data[i], dtype=np.float32) for i in ids if i in data])

    def spaces(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(Vector.space).distinct()))

    # -- writes -------------------------------------------------------------------------------
    def set_inodes(self, inodes: dict[int, int]) -> None:
        """Record inodes of unchanged items indexed before inodes were kept (one transaction)."""
        with self._write() as s:
            s.execute(
                update(Item).where(Item.id == bindparam("item_id")).values(inode=bindparam("ino")),
                [{"item_id": i, "ino": n} for i, n in inodes.items()],
                execution_options={"synchronize_session": False},
            )

    def write_batch(self, records: Sequence[ItemRecord], replace_ids: dict[str, int]) -> list[int]:
        """Insert new items / overwrite changed ones in one transaction; returns their ids.

        ``replace_ids`` maps a path to the id it already has: a changed file keeps its id.
        """
        now = time.time()
        ids: list[int] = []
        replaced_spaces = {sp for spaces in self.spaces_of(list(replace_ids.values())).values() for sp in spaces}
        with self._write() as s:
            for rec in records:
                a = rec.attrs
                fields = dict(
                    path=rec.path,
                    modality=rec.modality,
                    size=clamp_int64(rec.size),
                    mtime_ns=clamp_int64(rec.mtime_ns),
                    content_hash=rec.content_hash,
                    inode=None if rec.inode is None else clamp_int64(rec.inode),
                    width=a.width,
                    height=a.height,
                    excerpt=a.excerpt,
                    caption=rec.caption,
                    caption_path=rec.caption_path,
                    caption_sig=rec.caption_sig,
                    duration=a.duration,
                    ocr_text=a.ocr_text,
                    taken_at=a.taken_at,
                    info=a.info or None,
                    status="ok",
                    indexed_at=now,
                )
                item_id = replace_ids.get(rec.path)
                if item_id is None:
                    item = Item(**fields)
                    s.add(item)
                    s.flush()
                    item_id = item.id
                else:
                    s.execute(update(Item).where(Item.id == item_id).values(**fields))
                    s.execute(delete(Vector).where(Vector.item_id == item_id))
                    s.execute(delete(Segment).where(Segment.item_id == item_id))
                vec = np.ascontiguousarray(rec.vector, dtype=np.float32)
                s.add(Vector(item_id=item_id, space=rec.modality, data=vec.tobytes()))
                for space, extra in rec.extra_vectors.items():
                    data = np.ascontiguousarray(extra, dtype=np.float32).tobytes()
                    s.add(Vector(item_id=item_id, space=space, data=data))
                for seg in rec.segments:
                    s.add(
                        Segment(
                            item_id=item_id,
                            start=float(seg.start),
                            end=float(seg.end),
                            kind=seg.kind,
                            text=seg.text,
                            data=np.ascontiguousarray(seg.vector, dtype=np.float32).tobytes(),
                        )
                    )
                ids.append(item_id)
            extras = {sp for r in records for sp in r.extra_vectors}
            self._bump(s, {r.modality for r in records} | extras | replaced_spaces)
        return ids

    def delete_items(self, ids: Sequence[int]) -> dict[str, list[int]]:
        """Delete items (and their vectors); returns the removed ids per space."""
        removed: dict[str, list[int]] = {}
        if not ids:
            return removed
        with self._write() as s:
            for chunk in _chunks(ids):
                for item_id, space in s.execute(select(Vector.item_id, Vector.space).where(Vector.item_id.in_(chunk))):
                    removed.setdefault(space, []).append(item_id)
                s.execute(delete(Vector).where(Vector.item_id.in_(chunk)))
                s.execute(delete(Segment).where(Segment.item_id.in_(chunk)))
                s.execute(delete(Item).where(Item.id.in_(chunk)))
            self._bump(s, removed)
        return removed
