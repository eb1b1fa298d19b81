"""SQLite metadata store (SQLAlchemy 2.0, WAL mode) with a schema version and named migrations."""

from mmsearch.store.db import ItemRecord, Store
from mmsearch.store.migrations import SCHEMA_VERSION
from mmsearch.store.models import Item

__all__ = ["SCHEMA_VERSION", "Item", "ItemRecord", "Store"]
