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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsearch.encoders import TEXT
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
    REFERENCE_TEXTS), so a space holding three captions is calibrated like one holding thousands."""

    def __init__(self, samples: dict[str, np.ndarray], text_population: np.ndarray) -> None:
        self.samples = samples
        self.text_population = text_population
        self._stats: dict[tuple[int, str], tuple[float, float]] = {}

    def stats(self, part: int, space: Space, q: np.ndarray) -> tuple[float, float]:
        key = (part, "text-derived" if space.text_derived else space.name)
        if key not in self._stats:
            sample = self.text_population if space.text_derived else self.samples.get(space.name)
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
    spaces_for: dict[str, list[Space]],
    calibration: Calibration,
    moments: Mapping[int, np.ndarray] | None = None,
) -> list[Scored]:
    """Score candidates (see the module docstring); best first, ties by id.

    ``moments``: for items of modalities that rank by their best moment (a video's frames and spoken
    segments), those segments' vectors; the item's own similarity is then the best of its own vector's and
    its moments', so the one scene of a film that matches counts in full.
    """
    parts = query.parts
    moments = moments or {}

    def similarity(c: int, space: Space, v: np.ndarray, q: np.ndarray) -> float:
        sim = float(v @ q)
        if space.own and c in moments:
            sim = max(sim, float((moments[c] @ q).max()))
        return sim

    norm = sum(p.weight for p in parts if not p.negative)
    # rank lists for rrf: per (part, space), candidates holding a vector there, by similarity
    ranks: dict[tuple[int, str], dict[int, int]] = {}
    if query.fusion == "rrf":
        for pi in range(len(parts)):
            for space in {s for spaces in spaces_for.values() for s in spaces}:
                if space.text_derived and parts[pi].kind != TEXT:
                    continue
                held = [
                    (similarity(c, space, vectors[(c, space.name)], qvecs[pi]), c)
                    for c in candidates
                    if (c, space.name) in vectors
                ]
                if space.text_derived:
                    # a sparse list (3 captions) would rank an irrelevant caption first: an extra
                    # vector votes only when it matches better than text in general does
                    mu, _ = calibration.stats(pi, space, qvecs[pi])
                    held = [h for h in held if h[0] > mu]
                held.sort(key=lambda t: (-t[0], t[1]))
                ranks[(pi, space.name)] = {c: r for r, (_, c) in enumerate(held, start=1)}
    out = []
    for c in candidates:
        modality = modality_of[c]
        own = Space(modality)
        total = 0.0
        detail: list[dict[str, Any]] = []
        for pi, part in enumerate(parts):
            q = qvecs[pi]
            sign = -1.0 if part.negative else 1.0
            mu_own, sd_own = calibration.stats(pi, own, q)
            rows: list[dict[str, Any]] = []
            for space in spaces_for.get(modality, [own]):
                if space.text_derived and part.kind != TEXT:
                    continue  # pictures and sounds as queries compare with items' own vectors only
                v = vectors.get((c, space.name))
                if v is None:
                    continue
                sim = similarity(c, space, v, q)
                weight = space.weight
                mu, sd = calibration.stats(pi, space, q)
                z = (sim - mu) / sd
                if query.fusion == "rrf":
                    rank = ranks.get((pi, space.name), {}).get(c)
                    value = weight / (RRF_K + rank) if rank else 0.0
                elif space.own:
                    value = sim
                elif query.fusion == "sum":
                    value = weight * sd_own * z
                else:  # max: the best vector, each calibrated into the own space's units
                    value = mu_own + sd_own * weight * z
                rows.append({"space": space.name, "similarity": sim, "z": z, "weight": weight, "value": value})
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
