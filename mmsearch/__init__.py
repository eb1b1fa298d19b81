"""mmsearch: search your own photos, notes and sounds by meaning.

The public API is ``Engine``, ``Query``/``QueryPart`` and ``Hit``; they load lazily so ``import mmsearch``
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmsearch.errors import MmsearchError

__version__ = "0.1.0"
__all__ = ["Engine", "Hit", "IndexOptions", "IngestReport", "MmsearchError", "Query", "QueryPart", "__version__"]

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.ingest import IndexOptions, IngestReport
    from mmsearch.search import Hit, Query, QueryPart

_LAZY = {
    "Engine": "mmsearch.engine",
    "Query": "mmsearch.search",
    "QueryPart": "mmsearch.search",
    "Hit": "mmsearch.search",
    "IngestReport": "mmsearch.ingest",
    "IndexOptions": "mmsearch.ingest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
