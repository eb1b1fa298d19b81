"""The search pipeline: a :class:`Query` in, :class:`Hit` s out, through the stages of :mod:`.stages`.

Nothing here imports the ingest side; a search reads one committed state of the index (a SQLite read
snapshot, with every FAISS index older than it reloaded first).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from mmsearch import threads
from mmsearch.encoders import TEXT, Encoder
from mmsearch.encoders.towers import Towers
from mmsearch.errors import MmsearchError, QueryError
from mmsearch.modalities import get, space
from mmsearch.search import stages
from mmsearch.search.fusion import REFERENCE_TEXTS, Calibration, Scored
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
        threads.narrow()
        with self.store.snapshot():
            return self._run(query, self.index.refresh())

    def run_many(self, queries: Sequence[Query]) -> list[list[Hit] | MmsearchError]:
        """Rank items for several queries at once, each answered as :meth:`run` answers it alone (the same
        hits; scores equal to float rounding), in one committed state of the index. What they share is
        done once: the text (or pictures) of all their parts goes through each tower in one call, and each
        space is searched with all their vectors in one FAISS call, on every thread of the budget.

        Returns:
            Per query, its hits, or the error :meth:`run` would have raised for it alone.
        """
        out: list[list[Hit] | MmsearchError] = [[] for _ in queries]
        if len(queries) < 2:
            for i, q in enumerate(queries):
                out[i] = self._attempt(q)
            return out
        with self.store.snapshot():
            gens = self.index.refresh()
            towers = self._towers()
            present = self.index.present(gens)
            live: list[int] = []
            plans: dict[int, stages.Plan] = {}
            for i, q in enumerate(queries):
                try:
                    q.validate()
                    plans[i] = stages.plan(q, towers, present, self.store)
                    live.append(i)
                except MmsearchError as e:
                    out[i] = e
            threads.wide()
            try:
                vecs = stages.embed_many(towers, [(queries[i].parts, plans[i].roles) for i in live])
            except MmsearchError:  # one bad part: embed one query at a time, so the error is its own
                threads.narrow()
                for i in live:
                    out[i] = self._attempt(queries[i])
                return out
            qvecs = dict(zip(live, vecs, strict=True))
            batch = []
            for i in live:
                try:
                    stages.check_comparable(qvecs[i], plans[i], towers)
                except MmsearchError as e:
                    out[i] = e
                    continue
                allowed = plans[i].allowed
                if allowed is None or allowed.size:
                    batch.append(i)
            fetch = {i: max(50, 4 * (queries[i].offset + queries[i].k)) for i in batch}
            found = stages.candidates_many(
                [(queries[i], qvecs[i], plans[i]) for i in batch], self.index, [fetch[i] for i in batch]
            )
            threads.narrow()
            reads = stages.Prefetched(self.store)
            spaces = sorted({sp.name for i in batch for sp in plans[i].spaces})
            reads.load(sorted(set().union(*found)), spaces)
            ranked: dict[int, list[Scored]] = {}
            for i, cands in zip(batch, found, strict=True):
                try:
                    q, qv, plan = queries[i], qvecs[i], plans[i]
                    ranked[i] = self._rank(q, qv, plan, present, gens, towers, fetch[i], cands, reads)
                except MmsearchError as e:
                    out[i] = e
            pages = {r.id for i, rs in ranked.items() for r in rs[queries[i].offset : queries[i].offset + queries[i].k]}
            reads.load_items(sorted(pages))
            for i, rs in ranked.items():
                out[i] = stages.hits(queries[i], qvecs[i], rs, reads)
        return out

    def _attempt(self, query: Query) -> list[Hit] | MmsearchError:
        try:
            return self.run(query)
        except MmsearchError as e:
            return e

    def _run(self, query: Query, gens: dict[str, int]) -> list[Hit]:
        towers = self._towers()
        present = self.index.present(gens)
        plan = stages.plan(query, towers, present, self.store)
        qvecs = stages.embed_parts(towers, query.parts, plan.roles)
        stages.check_comparable(qvecs, plan, towers)
        if plan.allowed is not None and plan.allowed.size == 0:
            return []
        fetch = max(50, 4 * (query.offset + query.k))
        cands = stages.candidates(query, qvecs, plan, self.index, fetch)
        ranked = self._rank(query, qvecs, plan, present, gens, towers, fetch, cands, self.store)
        return stages.hits(query, qvecs, ranked, self.store)

    def _rank(
        self,
        query: Query,
        qvecs: stages.QueryVectors,
        plan: stages.Plan,
        present: set[str],
        gens: dict[str, int],
        towers: Towers,
        fetch: int,
        cands: set[int],
        reads: stages.Reads,
    ) -> list[Scored]:
        """From the first ``fetch`` candidates to the fused ranking: re-score and fuse, fetching 4x more
        while too few survive the filters and de-duplication."""
        calibration = self.calibration(plan, present, gens, towers)
        want = query.offset + query.k
        while True:
            ranked = stages.rescore_and_fuse(query, qvecs, sorted(cands), plan, reads, calibration)
            if len(ranked) >= want or stages.exhausted(plan, self.index, fetch):
                return ranked
            fetch *= 4
            cands = stages.candidates(query, qvecs, plan, self.index, fetch)

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
            self._reference = self._stored_reference(encoder)
            if self._reference is None:
                self._reference = encoder.encode_text(list(REFERENCE_TEXTS))
        parts = [self._reference]
        for name in sorted(present):
            s = space(name)
            if s.text_derived or (s.own and _text_like(s.modality)):
                parts.append(self._sample(name, gens))
        return np.concatenate([p for p in parts if len(p)])

    def save_reference(self) -> None:
        """Store the reference phrases' vectors in the index (an index run does, its model loaded), so a
        query process never encodes them: 64 texts, 1.4-2.7 s of a cold query with OpenCLIP.

        Raises:
            StoreWriteError: the index cannot be written.
        """
        encoder = self._towers().get(TEXT)
        if encoder is None or self._stored_reference(encoder) is not None:
            return
        vecs = np.ascontiguousarray(encoder.encode_text(list(REFERENCE_TEXTS)), dtype="<f4")
        self.store.set_meta(
            **{
                REFERENCE_KEY: {
                    "model": encoder.fingerprint,
                    "texts": _texts_digest(),
                    "shape": list(vecs.shape),
                    "data": base64.b64encode(vecs.tobytes()).decode(),
                }
            }
        )
        self._reference = vecs

    def reference_saved(self) -> bool:
        """Whether the index holds reference vectors for these phrases (made with its model: the index
        refuses any other)."""
        got = self.store.get_meta(REFERENCE_KEY)
        return isinstance(got, dict) and got.get("texts") == _texts_digest()

    def _stored_reference(self, encoder: Encoder) -> np.ndarray | None:
        """The stored reference vectors, if they are this text tower's for these phrases."""
        got = self.store.get_meta(REFERENCE_KEY)
        if not isinstance(got, dict) or got.get("model") != encoder.fingerprint or got.get("texts") != _texts_digest():
            return None
        try:
            vecs = np.frombuffer(base64.b64decode(got["data"], validate=True), dtype="<f4")
            vecs = vecs.reshape(len(REFERENCE_TEXTS), encoder.dim).astype(np.float32)
        except (KeyError, TypeError, ValueError):
            return None  # damaged: computed again, as before
        return vecs if np.isfinite(vecs).all() else None

    def _sample(self, space: str, gens: dict[str, int]) -> np.ndarray:
        key = (space, gens.get(space, 0))
        cached = self._samples.get(space)
        if cached is None or cached[0] != key:
            cached = (key, self.store.sample_vectors(space))
            self._samples[space] = cached
        return cached[1]


REFERENCE_KEY = "reference_vectors"


def _texts_digest() -> str:
    return hashlib.sha256("\n".join(REFERENCE_TEXTS).encode()).hexdigest()[:16]


def _text_like(modality: str) -> bool:
    """Whether a modality's own vectors are text embeddings (notes); False for one no longer registered."""
    try:
        return get(modality).text_like
    except QueryError:
        return False
