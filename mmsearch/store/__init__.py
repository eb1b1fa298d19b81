"""SQLite metadata store (WAL mode) with a schema version and named migrations: writes through SQLAlchemy 2.0's
ORM, reads through the standard library's sqlite3 (a query never imports SQLAlchemy)."""

from mmsearch.store.db import Store
from mmsearch.store.migrations import SCHEMA_VERSION
from mmsearch.store.records import Attrs, IndexInfo, ItemRecord, KnownFile, Reusable, SegmentRecord
from mmsearch.store.records import ItemRow as Item

__all__ = [
    "SCHEMA_VERSION",
    "Attrs",
    "IndexInfo",
    "Item",
    "ItemRecord",
    "KnownFile",
    "Reusable",
    "SegmentRecord",
    "Store",
]
