"""Named schema migrations (llm's ``m001_...`` style). Append only; never edit a shipped one."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from mmsearch.store.models import Base


def m001_initial(conn: Connection) -> None:
    """Items, their vectors, and index metadata."""
    Base.metadata.create_all(conn)


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", m001_initial),
]

SCHEMA_VERSION = len(MIGRATIONS)
