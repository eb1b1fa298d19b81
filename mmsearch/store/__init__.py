"""SQLite metadata store (SQLAlchemy 2.0, WAL mode) with a schema version and named migrations."""

from mmsearch.store.db import Store
from mmsearch.store.migrations import SCHEMA_VERSION
from mmsearch.store.models import Item
from mmsearch.store.records import Attrs, IndexInfo, ItemRecord, KnownFile, Reusable, SegmentRecord

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
