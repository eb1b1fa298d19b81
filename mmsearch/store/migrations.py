"""Named schema migrations (llm's ``m001_...`` style). Append only; never edit a shipped one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection


def m001_initial(conn: Connection) -> None:
    """Items, their vectors, and index metadata (as first shipped)."""
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL PRIMARY KEY, value TEXT NOT NULL)")
    conn.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS items (
        id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, modality VARCHAR(16) NOT NULL,
        size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, content_hash VARCHAR(64) NOT NULL, width INTEGER,
        height INTEGER, excerpt TEXT, caption TEXT, caption_path TEXT, caption_sig VARCHAR(64),
        status VARCHAR(16) NOT NULL, indexed_at FLOAT NOT NULL)"""
    )
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_modality ON items (modality)")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_content_hash ON items (content_hash)")
    conn.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS vectors (
        item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE, space VARCHAR(16) NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (item_id, space))"""
    )


def m002_audio(conn: Connection) -> None:
    """Audio: an item's duration, and its time-stamped speech/sound segments (frozen SQL, as shipped)."""
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(items)")}
    if "duration" not in columns:
        conn.exec_driver_sql("ALTER TABLE items ADD COLUMN duration FLOAT")
    conn.exec_driver_sql(
        """CREATE TABLE IF NOT EXISTS segments (
        id INTEGER NOT NULL PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
        start FLOAT NOT NULL, "end" FLOAT NOT NULL, kind VARCHAR(16) NOT NULL, text TEXT, data BLOB NOT NULL)"""
    )
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_segments_item_id ON segments (item_id)")


def m003_item_text(conn: Connection) -> None:
    """Images: the text OCR read in them, and the EXIF capture time."""
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(items)")}
    for name, kind in (("ocr_text", "TEXT"), ("taken_at", "FLOAT")):
        if name not in columns:
            conn.exec_driver_sql(f"ALTER TABLE items ADD COLUMN {name} {kind}")


def m004_inode_space_index(conn: Connection) -> None:
    """Items remember their inode; vectors get an index by space (per-space counts and scans)."""
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(items)")}
    if "inode" not in columns:
        conn.exec_driver_sql("ALTER TABLE items ADD COLUMN inode BIGINT")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_vectors_space ON vectors (space, item_id)")


def m005_item_info(conn: Connection) -> None:
    """Items keep what is their modality's own (a video's frame rate, codec) as JSON."""
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(items)")}
    if "info" not in columns:
        conn.exec_driver_sql("ALTER TABLE items ADD COLUMN info JSON")


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_audio", m002_audio),
    ("m003_item_text", m003_item_text),
    ("m004_inode_space_index", m004_inode_space_index),
    ("m005_item_info", m005_item_info),
]

SCHEMA_VERSION = len(MIGRATIONS)
