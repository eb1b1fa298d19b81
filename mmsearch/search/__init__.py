"""The search pipeline: a :class:`Query` in, :class:`Hit` s out, through the stages of :mod:`.stages`.

Nothing here imports the ingest side; a search reads one committed state of the index (a SQLite read
snapshot, with every FAISS index older than it reloaded first).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmsearch.encoders import TEXT
from mmsearch.encoders.towers import Towers
from mmsearch.errors import QueryError
from mmsearch.modalities import get, space
from mmsearch.search import stages
from mmsearch.search.fusion import REFERENCE_TEXTS, Calibration
from mmsearch.search.hit import Hit
from mmsearch.search.query import ANY, Query, QueryPart
from mmsearch.spaceset import SpaceSet
from mmsearch.store import Store

__all__ = ["ANY", "Hit", "Query", "QueryPart", "Searcher"]


class Searcher:
    """Runs queries over one index.

    Args:
        store: The index's SQLite store.
        index: Its FAISS indexes.
        towers: Returns the index's towers (loaded on first use).
    """

    def __init__(self, store: Store, index: SpaceSet, towers: Callable[[], Towers]) -> None:
        self.store = store
        self.index = index
        self._towers = towers
        self._samples: dict[str, tuple[tuple[str, int], np.ndarray]] = {}
        self._reference: np.ndarray | None = None

    def run(self, query: Query) -> list[Hit]:
        """Rank items for ``query`` (see :mod:`mmsearch.search.fusion` for how scores are fused).

        Raises:
            QueryError: a malformed query, or one the index's model cannot embed.
        """
        query.validate()
        with self.store.snapshot():
            return self._run(query, self.index.refresh())

    def _run(self, query: Query, gens: dict[str, int]) -> list[Hit]:
        towers = self._towers()
        present = self.index.present(gens)
        plan = stages.plan(query, towers, present, self.store)
        qvecs = stages.embed_parts(towers, query.parts, plan.roles)
        stages.check_comparable(qvecs, plan, towers)
        if plan.allowed is not None and plan.allowed.size == 0:
            return []
        calibration = self.calibration(plan, present, gens, towers)
        want = query.offset + query.k
        fetch = max(50, 4 * want)
        while True:
            cands = stages.candidates(query, qvecs, plan, self.index, fetch)
            ranked = stages.rescore_and_fuse(query, qvecs, sorted(cands), plan, self.store, calibration)
            if len(ranked) >= want or stages.exhausted(plan, self.index, fetch):
                break
            fetch *= 4
        return stages.hits(query, qvecs, ranked, self.store)

    # -- calibration ------------------------------------------------------------------------------------
    def calibration(self, plan: stages.Plan, present: set[str], gens: dict[str, int], towers: Towers) -> Calibration:
        """Samples of each planned space, and the text population (samples of every text-like space plus
        the reference phrases) that text-derived spaces are calibrated against."""
        samples = {s.name: self._sample(s.name, gens) for s in plan.spaces}
        text_like = frozenset(s.name for s in plan.spaces if s.own and _text_like(s.modality))
        return Calibration(samples, self._text_population(present, gens, towers), text_like)

    def _text_population(self, present: set[str], gens: dict[str, int], towers: Towers) -> np.ndarray:
        encoder = towers.get(TEXT)
        if encoder is None:
            return np.zeros((0, towers.primary.dim), dtype=np.float32)
        if self._reference is None:
            self._reference = encoder.encode_text(list(REFERENCE_TEXTS))
        parts = [self._reference]
        for name in sorted(present):
            s = space(name)
            if s.text_derived or (s.own and _text_like(s.modality)):
                parts.append(self._sample(name, gens))
        return np.concatenate([p for p in parts if len(p)])

    def _sample(self, space: str, gens: dict[str, int]) -> np.ndarray:
        key = (space, gens.get(space, 0))
        cached = self._samples.get(space)
        if cached is None or cached[0] != key:
            cached = (key, self.store.sample_vectors(space))
            self._samples[space] = cached
        return cached[1]


def _text_like(modality: str) -> bool:
    """Whether a modality's own vectors are text embeddings (notes); False for one no longer registered."""
    try:
        return get(modality).text_like
    except QueryError:
        return False
