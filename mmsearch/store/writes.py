"""The Store's writes and schema migrations, through SQLAlchemy 2.0's ORM (imported only by a process that
writes: a query reads with the standard library's sqlite3, see :mod:`mmsearch.store.db`)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, bindparam, create_engine, delete, event, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mmsearch.errors import IndexCorruptError, StoreWriteError
from mmsearch.files import clamp_int64
from mmsearch.store.db import DAMAGED, damaged_message
from mmsearch.store.migrations import MIGRATIONS, SCHEMA_VERSION
from mmsearch.store.models import Item, Meta, Segment, Vector
from mmsearch.store.records import ItemRecord

if TYPE_CHECKING:
    from mmsearch.store.db import Store  # noqa: F401 (a string annotation)


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


def _sqlite_read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _damaged_database(path: Path) -> Any:
    """A ``handle_error`` hook: a damaged database file is an IndexCorruptError (one line, what to do),
    wherever the damage is met: opening, a query that reads a broken page, a write."""

    def hook(context: Any) -> None:
        orig = context.original_exception
        if isinstance(orig, sqlite3.DatabaseError) and getattr(orig, "sqlite_errorcode", None) in DAMAGED:
            raise IndexCorruptError(damaged_message(path, orig)) from orig

    return hook


def make_engine(path: Path, read_only: bool, immutable: bool) -> Engine:
    """A SQLAlchemy engine on the database file, with the pragmas every connection gets."""
    if read_only:
        flags = "mode=ro" + ("&immutable=1" if immutable else "")
        engine = create_engine(f"sqlite:///file:{path}?{flags}&uri=true")
        event.listen(engine, "connect", _sqlite_read_only_pragmas)
    else:
        engine = create_engine(f"sqlite:///{path}")
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "handle_error", _damaged_database(path))
    return engine


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema. Creating or upgrading takes the write lock first, then looks again: two
    processes opening a new index at once must not both create it. A new database is built by the same named
    migrations an old one is upgraded by, so both reach the same schema."""
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        version = _version(conn)
        if version is None or version < SCHEMA_VERSION:
            for number, (_name, step) in enumerate(MIGRATIONS, start=1):
                if number > (version or 0):
                    step(conn)
            conn.execute(delete(Meta).where(Meta.key == "schema_version"))
            conn.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        conn.commit()


def _version(conn: Any) -> int | None:
    has_meta = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").first()
    if not has_meta:
        return None
    row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()
    return int(row[0]) if row else 0


class Writer:
    """Every write of a Store: one SQLAlchemy session and transaction per call."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction; a failure to write (disk full, read-only folder) rolls it back whole."""
        try:
            with Session(self.store.engine) as s, s.begin():
                yield s
        except OperationalError as e:
            why = "the index folder is read-only" if self.store.read_only else str(e.orig)
            if "I/O error" in why or "full" in why:
                why += " (is the disk full?)"
            raise StoreWriteError(f"cannot write index database {self.store.path}: {why}") from e

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._write() as s:
            for key, value in values.items():
                s.merge(Meta(key=key, value=json.dumps(value)))

    @staticmethod
    def _bump(s: Session, spaces: Iterable[str]) -> None:
        for space in set(spaces):
            key = f"generation:{space}"
            current = s.scalar(select(Meta.value).where(Meta.key == key))
            s.merge(Meta(key=key, value=json.dumps(int(json.loads(current or "0")) + 1)))

    def set_inodes(self, inodes: dict[int, int]) -> None:
        with self._write() as s:
            s.execute(
                update(Item).where(Item.id == bindparam("item_id")).values(inode=bindparam("ino")),
                [{"item_id": i, "ino": n} for i, n in inodes.items()],
                execution_options={"synchronize_session": False},
            )

    def write_batch(self, records: Sequence[ItemRecord], replace_ids: dict[str, int]) -> list[int]:
        now = time.time()
        ids: list[int] = []
        replaced = {sp for spaces in self.store.spaces_of(list(replace_ids.values())).values() for sp in spaces}
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
            self._bump(s, {r.modality for r in records} | extras | replaced)
        return ids

    def delete_items(self, ids: Sequence[int]) -> dict[str, list[int]]:
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
