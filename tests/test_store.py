"""The SQLite store: schema version, WAL, migrations, refusal of newer schemas, corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import solid
from sqlalchemy import text

from mmsearch import Engine
from mmsearch.errors import IndexCorruptError, SchemaError
from mmsearch.store import SCHEMA_VERSION, ItemRecord, Store


def test_new_store_records_schema_version_and_uses_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    assert store.get_meta("schema_version") == SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.set_meta(schema_version=SCHEMA_VERSION + 1)
    store.close()
    with pytest.raises(SchemaError, match="upgrade mmsearch"):
        Store(tmp_path / "s.sqlite3")


def test_an_unversioned_database_is_migrated(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM meta WHERE key='schema_version'"))
    store.close()
    store = Store(tmp_path / "s.sqlite3")
    assert store.get_meta("schema_version") == SCHEMA_VERSION
    store.close()


def test_corrupt_database_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "s.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexCorruptError, match="cannot read index database"):
        Store(tmp_path / "s.sqlite3")


def test_write_delete_bump_generations_and_roundtrip_vectors(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    vec = np.arange(4, dtype=np.float32)
    recs = [ItemRecord(f"/x/{i}.jpg", "image", 1, 1, f"h{i}", vec + i) for i in range(3)]
    ids = store.write_batch(recs, {})
    assert store.generation("image") == 1
    chunks = list(store.iter_vectors("image", batch=2))
    assert [len(c[0]) for c in chunks] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks])[2], vec + 2)
    np.testing.assert_array_equal(store.reusable("h1", "image").vector, vec + 1)
    assert store.delete_items(ids[:1]) == {"image": [ids[0]]}
    assert store.generation("image") == 2 and store.counts() == {"image": 2}
    store.close()


def test_index_survives_a_reopen_with_schema_intact(tmp_path: Path) -> None:
    solid(tmp_path / "lib" / "a.jpg", "red")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([tmp_path / "lib"])
    with Engine.open(tmp_path / "idx") as eng:
        assert eng.info().schema_version == SCHEMA_VERSION
        assert eng.search(text="red", k=1)[0].path.endswith("a.jpg")


def test_a_schema_1_index_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from mmsearch.store.migrations import m001_initial

    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        m001_initial(conn)  # the schema as first shipped
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1')"))
        conn.execute(
            text(
                "INSERT INTO items (path, modality, size, mtime_ns, content_hash, status, indexed_at) "
                "VALUES ('/x/a.jpg', 'image', 1, 1, 'h', 'ok', 0)"
            )
        )
    engine.dispose()
    store = Store(path)
    assert store.get_meta("schema_version") == SCHEMA_VERSION == 5
    assert list(store.known_files()) == ["/x/a.jpg"]  # nothing lost
    assert store.segments(1) == []  # the new table exists
    with store.engine.begin() as conn:
        cols = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(items)")}
    assert {"duration", "ocr_text", "taken_at", "inode", "info"} <= cols
    store.close()


def test_an_old_index_in_a_read_only_folder_is_refused_not_misread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine

    import mmsearch.store.db
    from mmsearch.store.migrations import m001_initial

    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        m001_initial(conn)
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1')"))
    engine.dispose()
    # what os.access says of a folder this process may not write (file modes do not bind root)
    monkeypatch.setattr(mmsearch.store.db.os, "access", lambda p, mode: False)
    with pytest.raises(SchemaError, match="cannot be upgraded to 5 in a read-only folder"):
        Store(path)
    monkeypatch.undo()
    store = Store(path)  # writable again: migrated
    assert store.get_meta("schema_version") == SCHEMA_VERSION
    store.close()


def _schema(path: Path) -> dict[str, object]:
    import sqlite3

    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {
            "columns": {t: sorted(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables},
            "indexes": sorted(
                r[0]
                for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")
            ),
        }


def test_a_new_database_and_an_upgraded_one_reach_the_same_schema_by_the_same_migrations(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from mmsearch.store.migrations import m001_initial
    from mmsearch.store.models import Base

    Store(tmp_path / "new.sqlite3").close()
    old = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        m001_initial(conn)
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1')"))
    engine.dispose()
    Store(old).close()
    new, upgraded = _schema(tmp_path / "new.sqlite3"), _schema(old)
    assert new == upgraded
    for table in Base.metadata.sorted_tables:  # and every column the models map exists
        assert {c.name for c in table.columns} <= set(new["columns"][table.name]), table.name  # type: ignore[index]
