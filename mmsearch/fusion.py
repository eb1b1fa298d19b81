"""The query layer: several query parts, several vectors per item, one ranking.

A :class:`Query` holds parts (texts, images, sounds; weighted, some negative) and filters. Every item
owns its own vector (``image``/``text``/``audio`` space) and, for pictures and sounds, text vectors of
its caption, file-name words and OCR text (``image.caption``, ``image.name``, ``image.ocr``, ...).

Scoring, per part ``p`` and item ``i`` (fusion ``sum``, the default)::

    s_p(i) = cos(q_p, own_i) + sum over the item's text vectors v:  W_v * sigma_p * z_p(v)

where ``z_p(v)`` is the similarity calibrated against that space (its z-score over a sample of the
space) and ``sigma_p`` the spread of the part's similarities in the item's own space, so an extra
vector adds "how unusually well it matches", in the units of the item's own similarity, and an item
with nothing extra keeps its plain cosine. The item's score is ``sum(±w_p * s_p) / sum(w_p of
positive parts)``. ``rrf`` sums ``W_v / (60 + rank)`` over every ranked list instead (an extra vector
ranked only when it beats the text population's mean); ``max`` keeps each
part's best calibrated vector. Candidates come from every FAISS index (over-fetched, filters applied
inside the search), are re-scored exactly from SQLite, and are fused per item id, so an item appears
once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders import AUDIO, IMAGE, TEXT
from mmsearch.errors import QueryError
from mmsearch.querylang import MAX_QUERY_CHARS, MAX_WEIGHT, MIN_WEIGHT, check_text, parse

FUSIONS = ("sum", "rrf", "max")
VECTOR = "vector"  # a part given as a vector in the index's space (clip-retrieval's embedding_input)
# weight of each kind of extra vector relative to the item's own (1.0)
EXTRA_WEIGHTS = {"caption": 1.0, "ocr": 1.0, "name": 0.5}
RRF_K = 60
MAX_RESULTS = 10_000  # offset + k
MAX_PARTS = 32  # text terms, images, sounds and vectors together
MAX_PATTERN_CHARS = 4096  # a --path glob (SQLite refuses very long GLOB patterns with "pattern too complex")
DEDUPE_SIMILARITY = 0.985  # own vectors at least this similar (or identical bytes) count as one item


@dataclass
class QueryPart:
    """One part of a query. ``value``: the text, or a path (or PIL image) for ``image``/``audio``."""

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
    target: str | None = None
    k: int = 10
    offset: int = 0
    fusion: str = "sum"
    path: str | None = None  # glob on the full path ("*/2023/*", "*.png")
    after: float | None = None  # epoch seconds: EXIF capture time, else file mtime
    before: float | None = None
    min_score: float | None = None
    dedupe: bool = False
    explain: bool = False

    @classmethod
    def parse(cls, text: str | None = None, **kw: Any) -> Query:
        """A query from the query grammar (see ``mmsearch.querylang``), plus keyword fields."""
        parts = kw.pop("parts", [])
        if text is not None and text.strip():
            parts = [QueryPart(TEXT, t.text, t.weight, t.negative) for t in parse(text)] + list(parts)
        for key in ("after", "before"):
            if isinstance(kw.get(key), str):
                kw[key] = parse_date(kw[key])
        return cls(parts=parts, **kw)

    def validate(self) -> None:
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
        for p in self.parts:
            if p.kind not in (TEXT, IMAGE, AUDIO, VECTOR):
                raise QueryError(f"unknown query part kind {p.kind!r}")
            if not (np.isfinite(p.weight) and MIN_WEIGHT <= p.weight <= MAX_WEIGHT):
                raise QueryError(f"weights must be numbers from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}, got {p.weight}")
            if p.kind == TEXT:
                if not isinstance(p.value, str) or not p.value.strip():
                    raise QueryError("a text part needs text")
                check_text(p.value, "query text", MAX_QUERY_CHARS)
        if self.path is not None:
            check_text(self.path, "the --path pattern", MAX_PATTERN_CHARS)


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


def extra_kind(space: str) -> str | None:
    """``image.caption`` -> ``caption``; None for an own space."""
    return space.split(".", 1)[1] if "." in space else None


@dataclass
class Scored:
    id: int
    score: float
    explain: list[dict[str, Any]] | None = None


# Phrases that give every text-derived space a population to calibrate against, even when an index
# holds three captions: a query's similarity to them is what "an unrelated text" scores.
REFERENCE_TEXTS = (
    "a photo", "a document", "a person", "a dog", "a cat", "a car", "a house", "a tree", "the sea", "a city street",
    "food on a plate", "a mountain", "a birthday party", "a receipt", "a screenshot", "a sunset", "a child playing",
    "a meeting", "an invoice", "a map", "a bicycle", "flowers", "a kitchen", "a concert", "snow", "a beach",
    "a computer", "a book", "a bird", "a horse", "a train", "an airplane", "a boat", "a bridge", "a church",
    "a garden", "rain", "a forest", "a river", "a desert", "a letter", "a ticket", "a menu", "a sign", "a poster",
    "holiday", "family", "work", "school", "sports", "music", "money", "shopping", "travel", "weather", "health",
    "IMG 2041", "notes", "todo list", "report 2021", "budget", "recipe", "photo 3", "scan",
)  # fmt: skip
MIN_SAMPLE = 20
DEFAULT_SPREAD = 0.1  # a cosine spread to assume when a space is too small to measure one


class Calibration:
    """Similarity statistics of each query part: per own space (a sample of its vectors), and one
    shared population for every text-derived vector (captions, names, OCR text, notes, and
    REFERENCE_TEXTS), so a space holding three captions is calibrated like one holding thousands."""

    def __init__(self, samples: dict[str, np.ndarray], text_population: np.ndarray) -> None:
        self.samples = samples
        self.text_population = text_population
        self._stats: dict[tuple[int, str], tuple[float, float]] = {}

    def stats(self, part: int, space: str, q: np.ndarray) -> tuple[float, float]:
        key = (part, space if extra_kind(space) is None else "text-derived")
        if key not in self._stats:
            sample = self.text_population if extra_kind(space) else self.samples.get(space)
            if sample is None or len(sample) == 0:
                self._stats[key] = (0.0, DEFAULT_SPREAD)
            else:
                sims = sample @ q
                spread = float(sims.std()) if len(sims) >= MIN_SAMPLE else DEFAULT_SPREAD
                self._stats[key] = (float(sims.mean()), max(spread, 1e-3))
        return self._stats[key]


def fuse(
    query: Query,
    qvecs: np.ndarray,
    candidates: Sequence[int],
    modality_of: dict[int, str],
    vectors: dict[tuple[int, str], np.ndarray],
    spaces_for: dict[str, list[str]],
    calibration: Calibration,
) -> list[Scored]:
    """Score candidates (see the module docstring); best first, ties by id."""
    parts = query.parts
    norm = sum(p.weight for p in parts if not p.negative)
    # rank lists for rrf: per (part, space), candidates holding a vector there, by similarity
    ranks: dict[tuple[int, str], dict[int, int]] = {}
    if query.fusion == "rrf":
        for pi in range(len(parts)):
            for space in {s for spaces in spaces_for.values() for s in spaces}:
                if extra_kind(space) and parts[pi].kind != TEXT:
                    continue
                held = [(float(vectors[(c, space)] @ qvecs[pi]), c) for c in candidates if (c, space) in vectors]
                if extra_kind(space):
                    # a sparse list (3 captions) would rank an irrelevant caption first: an extra
                    # vector votes only when it matches better than text in general does
                    mu, _ = calibration.stats(pi, space, qvecs[pi])
                    held = [h for h in held if h[0] > mu]
                held.sort(key=lambda t: (-t[0], t[1]))
                ranks[(pi, space)] = {c: r for r, (_, c) in enumerate(held, start=1)}
    out = []
    for c in candidates:
        modality = modality_of[c]
        own = modality
        total = 0.0
        detail: list[dict[str, Any]] = []
        for pi, part in enumerate(parts):
            q = qvecs[pi]
            sign = -1.0 if part.negative else 1.0
            mu_own, sd_own = calibration.stats(pi, own, q)
            rows: list[dict[str, Any]] = []
            for space in spaces_for.get(modality, [own]):
                kind = extra_kind(space)
                if kind is not None and part.kind != TEXT:
                    continue  # pictures and sounds as queries compare with items' own vectors only
                v = vectors.get((c, space))
                if v is None:
                    continue
                sim = float(v @ q)
                weight = 1.0 if kind is None else EXTRA_WEIGHTS.get(kind, 0.5)
                mu, sd = calibration.stats(pi, space, q)
                z = (sim - mu) / sd
                if query.fusion == "rrf":
                    rank = ranks.get((pi, space), {}).get(c)
                    value = weight / (RRF_K + rank) if rank else 0.0
                elif kind is None:
                    value = sim
                elif query.fusion == "sum":
                    value = weight * sd_own * z
                else:  # max: the best vector, each calibrated into the own space's units
                    value = mu_own + sd_own * weight * z
                rows.append({"space": space, "similarity": sim, "z": z, "weight": weight, "value": value})
            if query.fusion == "max":
                s_p = max((r["value"] for r in rows), default=0.0)
                for r in rows:
                    r["contribution"] = r["value"] if r["value"] == s_p else 0.0
            else:
                s_p = sum(r["value"] for r in rows)
                for r in rows:
                    r["contribution"] = r["value"]
            factor = sign * part.weight / norm
            for r in rows:
                r["contribution"] *= factor
            total += factor * s_p
            if query.explain:
                detail.append(
                    {
                        "part": part.label,
                        "weight": part.weight,
                        "negative": part.negative,
                        "score": s_p,
                        "contribution": factor * s_p,
                        "vectors": [{k: v for k, v in r.items() if k != "value"} for r in rows],
                    }
                )
        out.append(Scored(c, total, detail if query.explain else None))
    out.sort(key=lambda s: (-s.score, s.id))
    return out


def path_matches(path: str, pattern: str) -> bool:
    """Glob on the full path; a pattern without a slash also matches the file name alone."""
    return fnmatch.fnmatchcase(path, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(Path(path).name, pattern))


def embed_parts(encoder: Any, parts: Sequence[QueryPart]) -> np.ndarray:
    """One L2-normalised vector per part."""
    from mmsearch.query import embed_query

    out = []
    for p in parts:
        if p.kind == VECTOR:
            vec = np.asarray(p.value, dtype=np.float32).reshape(1, -1)
            if vec.shape[1] != encoder.dim:
                raise QueryError(f"a query vector must have {encoder.dim} numbers, not {vec.shape[1]}")
            out.append(vec / max(float(np.linalg.norm(vec)), 1e-12))
        elif p.kind == TEXT:
            out.append(embed_query(encoder, text=str(p.value)))
        elif p.kind == IMAGE:
            out.append(embed_query(encoder, image=p.value if not isinstance(p.value, str) else Path(p.value)))
        else:
            out.append(embed_query(encoder, audio=Path(str(p.value))))
    return np.concatenate(out)


def first_kind(query: Query) -> str | None:
    """The default target for a query led by a picture or a sound: its own kind."""
    kinds = {p.kind for p in query.parts if not p.negative}
    if TEXT in kinds:
        return None
    return IMAGE if IMAGE in kinds else AUDIO if AUDIO in kinds else None
