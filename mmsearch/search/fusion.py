"""The query layer: several query parts, several vectors per item, one ranking.

A :class:`Query` holds parts (texts, images, sounds; weighted, some negative) and filters. Every item
owns its own vector (its modality's own :class:`~mmsearch.modalities.Space`) and, where its modality has
them, text vectors of its caption, file-name words and OCR text (``image.caption``, ``image.name``, ...).

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mmsearch.modalities import Space
from mmsearch.search.query import Query

RRF_K = 60
DEDUPE_SIMILARITY = 0.985  # own vectors at least this similar (or identical bytes) count as one item


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
    REFERENCE_TEXTS), so a space holding three captions is calibrated like one holding thousands.

    Args:
        samples: Space name -> a sample of its vectors.
        text_population: The text population (in the text tower's space).
        text_like: Own spaces whose vectors are text (notes): calibrated against the text population when
            scores of several modalities are put on one scale.
    """

    def __init__(
        self, samples: dict[str, np.ndarray], text_population: np.ndarray, text_like: frozenset[str] = frozenset()
    ) -> None:
        self.samples = samples
        self.text_population = text_population
        self.text_like = text_like
        self._stats: dict[tuple[int, str], tuple[float, float]] = {}

    def stats(self, part: int, space: Space, q: np.ndarray, as_text: bool = False) -> tuple[float, float]:
        """(mean, spread) of part ``part``'s similarity over ``space``'s population; ``as_text``: a text-like
        own space over the text population."""
        population = space.text_derived or (as_text and space.name in self.text_like)
        key = (part, "text-derived" if population else space.name)
        if key not in self._stats:
            sample = self.text_population if population else self.samples.get(space.name)
            if sample is None or len(sample) == 0 or sample.shape[1] != q.shape[0]:
                self._stats[key] = (0.0, DEFAULT_SPREAD)
            else:
                sims = (sample @ q).astype(np.float64)  # summed in float64: the same in any row order
                spread = float(sims.std()) if len(sims) >= MIN_SAMPLE else DEFAULT_SPREAD
                self._stats[key] = (float(sims.mean()), max(spread, 1e-3))
        return self._stats[key]


QueryVector = Callable[[int, Space], "np.ndarray | None"]


def primary_space(spaces: Sequence[Space], kind: str, held: Callable[[Space], bool]) -> Space | None:
    """The space that stands for an item against a query part of ``kind``: a space that answers that kind
    (a recording's sound space for a query sound) when the item has a vector there, else its own."""
    for space in spaces:
        if kind in space.answers and held(space):
            return space
    return next((s for s in spaces if s.own), None)


def _holds(vectors: Mapping[tuple[int, str], np.ndarray], c: int, space: Space) -> bool:
    return (c, space.name) in vectors


def fuse(
    query: Query,
    qvec: QueryVector,
    candidates: Sequence[int],
    modality_of: dict[int, str],
    vectors: dict[tuple[int, str], np.ndarray],
    spaces_for: dict[str, list[Space]],
    calibration: Calibration,
    moments: Mapping[int, np.ndarray] | None = None,
) -> list[Scored]:
    """Score candidates (see the module docstring); best first, ties by id.

    ``qvec(part, space)``: the part's vector in that space's tower, None where it cannot be compared.
    ``moments``: for items of modalities that rank by their best moment (a video's frames and spoken
    segments), those segments' vectors in the own space's tower; the item's own similarity is then the best
    of its own vector's and its moments', so the one scene of a film that matches counts in full.

    With several target modalities, each part's score of an item is put in the units of the item's own space
    ((s - mean) / spread of that space's population; notes: of the text population), so a note that matches
    unusually well outranks a picture that matches as pictures usually do.
    """
    parts = query.parts
    moments = moments or {}
    several = len(spaces_for) > 1 and query.fusion != "rrf"

    def similarity(c: int, space: Space, v: np.ndarray, q: np.ndarray) -> float:
        sim = float(v @ q)
        if space.own and c in moments and moments[c].shape[1] == q.shape[0]:
            sim = max(sim, float((moments[c] @ q).max()))
        return sim

    def usable(space: Space, kind: str) -> bool:
        return not space.answers or kind in space.answers

    norm = sum(p.weight for p in parts if not p.negative)
    # rank lists for rrf: per (part, space), candidates holding a vector there, by similarity
    ranks: dict[tuple[int, str], dict[int, int]] = {}
    if query.fusion == "rrf":
        for pi in range(len(parts)):
            for space in {s for spaces in spaces_for.values() for s in spaces}:
                q = qvec(pi, space)
                if q is None or not usable(space, parts[pi].kind):
                    continue
                held = [
                    (similarity(c, space, vectors[(c, space.name)], q), c)
                    for c in candidates
                    if (c, space.name) in vectors
                ]
                if space.text_derived:
                    # a sparse list (3 captions) would rank an irrelevant caption first: an extra
                    # vector votes only when it matches better than text in general does
                    mu, _ = calibration.stats(pi, space, q)
                    held = [h for h in held if h[0] > mu]
                held.sort(key=lambda t: (-t[0], t[1]))
                ranks[(pi, space.name)] = {c: r for r, (_, c) in enumerate(held, start=1)}
    out = []
    for c in candidates:
        modality = modality_of[c]
        spaces = spaces_for.get(modality) or [Space(modality)]
        total = 0.0
        detail: list[dict[str, Any]] = []
        for pi, part in enumerate(parts):
            sign = -1.0 if part.negative else 1.0
            primary = primary_space(spaces, part.kind, partial(_holds, vectors, c))
            rows: list[dict[str, Any]] = []
            q_primary = qvec(pi, primary) if primary is not None else None
            mu_own, sd_own = (
                calibration.stats(pi, primary, q_primary, as_text=several)
                if primary is not None and q_primary is not None
                else (0.0, DEFAULT_SPREAD)
            )
            for space in spaces:
                if space.own and primary is not None and space != primary:
                    continue  # another space answers this kind of query for this item
                if space.answers and space != primary:
                    continue
                q = qvec(pi, space)
                v = vectors.get((c, space.name))
                if q is None or v is None:
                    continue
                sim = similarity(c, space, v, q)
                weight = space.weight
                mu, sd = calibration.stats(pi, space, q)
                z = (sim - mu) / sd
                if query.fusion == "rrf":
                    rank = ranks.get((pi, space.name), {}).get(c)
                    value = weight / (RRF_K + rank) if rank else 0.0
                elif space == primary:
                    value = sim
                elif query.fusion == "sum":
                    value = weight * sd_own * z
                else:  # max: the best vector, each calibrated into the own space's units
                    value = mu_own + sd_own * weight * z
                rows.append({"space": space.name, "similarity": sim, "z": z, "weight": weight, "value": value})
            if not rows:
                s_p = 0.0
            elif query.fusion == "max":
                s_p = max(r["value"] for r in rows)
                for r in rows:
                    r["contribution"] = r["value"] if r["value"] == s_p else 0.0
            else:
                s_p = sum(r["value"] for r in rows)
                for r in rows:
                    r["contribution"] = r["value"]
            if several and rows:
                # one scale for every modality: the own space's z units (a note's: the text population's)
                scaled = (s_p - mu_own) / sd_own
                for r in rows:
                    if query.fusion == "max":
                        r["contribution"] = scaled if r["contribution"] else 0.0
                    else:
                        shift = mu_own if primary is not None and r["space"] == primary.name else 0.0
                        r["contribution"] = (r["contribution"] - shift) / sd_own
                s_p = scaled
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
