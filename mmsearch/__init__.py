"""mmsearch: search your own photos, notes and sounds by meaning.

The public API is ``Engine``, ``Query``/``QueryPart`` and ``Hit``; they load lazily so ``import mmsearch``
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmsearch.errors import MmsearchError

__version__ = "0.1.0"
__all__ = ["Engine", "Hit", "IngestReport", "MmsearchError", "Query", "QueryPart", "__version__"]

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.fusion import Query, QueryPart
    from mmsearch.ingest import IngestReport
    from mmsearch.query import Hit


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from mmsearch.engine import Engine

        return Engine
    if name in ("Query", "QueryPart"):
        from mmsearch import fusion

        return getattr(fusion, name)
    if name == "Hit":
        from mmsearch.query import Hit

        return Hit
    if name == "IngestReport":
        from mmsearch.ingest import IngestReport

        return IngestReport
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
