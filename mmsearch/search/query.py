"""A query: its parts (texts, pictures, sounds, vectors; weighted, some negative), target, filters and
paging. One object, built by the CLI, the server and the Python API alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders import TEXT
from mmsearch.errors import QueryError
from mmsearch.modalities import VECTOR, all_modalities
from mmsearch.search.grammar import MAX_QUERY_CHARS, MAX_WEIGHT, MIN_WEIGHT, check_text, parse

FUSIONS = ("sum", "rrf", "max")
ANY = "any"
MAX_RESULTS = 10_000  # offset + k
MAX_PARTS = 32  # text terms, images, sounds and vectors together
MAX_PATTERN_CHARS = 4096  # a --path glob (SQLite refuses very long GLOB patterns with "pattern too complex")


@dataclass
class QueryPart:
    """One part of a query. ``kind``: a modality (``text``, ``image``, ``audio``) or ``vector``;
    ``value``: the text, a path (or PIL image), or the vector."""

    kind: str
    value: Any
    weight: float = 1.0
    negative: bool = False

    @property
    def label(self) -> str:
        if self.kind == TEXT:
            what = str(self.value)
        elif self.kind == VECTOR:
            what = "vector"
        elif isinstance(self.value, (str, Path)):
            what = f"{self.kind}:{Path(str(self.value)).name}"
        else:
            what = self.kind
        sign = "-" if self.negative else "+"
        return f"{sign}{self.weight:g}:{what}" if self.weight != 1.0 else f"{sign}{what}"


@dataclass
class Query:
    """A full query: parts, target, filters, paging, fusion. ``Engine.search(Query(...))`` runs it.

    Example:
        >>> Query.parse("golden retriever + 0.5:beach - snow", k=5, after="2023-01-01")
    """

    parts: list[QueryPart] = field(default_factory=list)
    target: str | None = None  # a modality, or "any"; None: the kind of a picture or sound query, else pictures
    k: int = 10
    offset: int = 0
    fusion: str = "sum"
    path: str | None = None  # glob on the full path ("*/2023/*", "*.png")
    after: float | None = None  # epoch seconds: capture time (EXIF), else file mtime
    before: float | None = None
    min_score: float | None = None
    dedupe: bool = False
    explain: bool = False

    @classmethod
    def parse(cls, text: str | None = None, **kw: Any) -> Query:
        """A query from the query grammar (see :mod:`mmsearch.search.grammar`), plus keyword fields."""
        parts = kw.pop("parts", [])
        if text is not None and text.strip():
            parts = [QueryPart(TEXT, t.text, t.weight, t.negative) for t in parse(text)] + list(parts)
        for key in ("after", "before"):
            if isinstance(kw.get(key), str):
                kw[key] = parse_date(kw[key])
        return cls(parts=parts, **kw)

    def validate(self) -> None:
        """Raises QueryError (one line, what to do) for anything a query cannot be."""
        if not self.parts:
            raise QueryError("nothing to search for: give a text query, --image or --audio")
        if not any(not p.negative for p in self.parts):
            raise QueryError("a query needs at least one positive part (negatives only demote)")
        if self.k < 1:
            raise QueryError(f"k must be at least 1, got {self.k}")
        if self.offset < 0:
            raise QueryError(f"offset must be 0 or more, got {self.offset}")
        if self.offset + self.k > MAX_RESULTS:
            raise QueryError(f"offset + k must be at most {MAX_RESULTS}")
        if self.fusion not in FUSIONS:
            raise QueryError(f"unknown fusion {self.fusion!r}: choose one of {', '.join(FUSIONS)}")
        if len(self.parts) > MAX_PARTS:
            raise QueryError(f"too many query parts ({len(self.parts)}; at most {MAX_PARTS})")
        kinds = {m.name for m in all_modalities()} | {VECTOR}
        for p in self.parts:
            if p.kind not in kinds:
                raise QueryError(f"unknown query part kind {p.kind!r}")
            if not (np.isfinite(p.weight) and MIN_WEIGHT <= p.weight <= MAX_WEIGHT):
                raise QueryError(f"weights must be numbers from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}, got {p.weight}")
            if p.kind == TEXT:
                if not isinstance(p.value, str) or not p.value.strip():
                    raise QueryError("a text part needs text")
                check_text(p.value, "query text", MAX_QUERY_CHARS)
        if self.path is not None:
            check_text(self.path, "the --path pattern", MAX_PATTERN_CHARS)

    def lead_kind(self) -> str | None:
        """The default target of a query led by a picture or a sound: its own kind (None with any text)."""
        kinds = {p.kind for p in self.parts if not p.negative}
        if TEXT in kinds:
            return None
        return next((m.name for m in all_modalities() if m.name in kinds), None)


def parse_date(value: str) -> float:
    """``2023-05-01`` (or a full ISO time) as epoch seconds, UTC."""
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError as e:
        raise QueryError(f"not a date: {value!r} (use YYYY-MM-DD)") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
