"""The stages of a search, each a function of its inputs (clip-back's ``KnnService.query`` names its
steps the same way): embed the query -> plan the spaces -> candidates from FAISS -> exact re-score
from SQLite -> fuse -> refine (threshold, dedupe) -> hits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmsearch.encoders import Encoder, l2_normalize
from mmsearch.errors import QueryError
from mmsearch.modalities import VECTOR, Space, get, indexable
from mmsearch.search.fusion import DEDUPE_SIMILARITY, Calibration, Scored, fuse
from mmsearch.search.hit import Hit
from mmsearch.search.query import ANY, Query, QueryPart
from mmsearch.spaceset import SpaceSet
from mmsearch.store import Store


# -- embed ------------------------------------------------------------------------------------------------
def embed_parts(encoder: Encoder, parts: Sequence[QueryPart]) -> np.ndarray:
    """One L2-normalised vector per part, each embedded by its own modality (or given, for ``vector``)."""
    out = []
    for p in parts:
        if p.kind == VECTOR:
            vec = np.asarray(p.value, dtype=np.float32).reshape(1, -1)
            if vec.shape[1] != encoder.dim:
                raise QueryError(f"a query vector must have {encoder.dim} numbers, not {vec.shape[1]}")
            out.append(vec / max(float(np.linalg.norm(vec)), 1e-12))
        else:
            out.append(l2_normalize(get(p.kind).embed_query(p.value, encoder)))
    return np.concatenate(out)


# -- plan ---------------------------------------------------------------------------------------------------
def resolve_targets(target: str | None, encoder: Encoder, default: str | None = None) -> list[str]:
    """The modalities to search. Default: ``default`` (the kind of a picture or sound query), else the
    first modality the model can embed (pictures, when it has an image tower)."""
    searchable = [m.name for m in indexable(encoder)]
    if not searchable:
        raise QueryError(f"model {encoder.name} embeds nothing mmsearch indexes")
    if target is None:
        target = default if default in searchable else searchable[0]
    target = target.lower()
    if target == ANY:
        return searchable
    try:
        get(target)
    except QueryError:
        raise QueryError(f"unknown target {target!r}: choose one of {', '.join([*searchable, ANY])}") from None
    if target not in searchable:
        raise QueryError(f"model {encoder.name} does not embed {target} items, so there are none to search")
    return [target]


@dataclass
class Plan:
    """Which spaces a query searches, per target modality, and the ids its filters allow (None: all)."""

    spaces_for: dict[str, list[Space]]
    allowed: np.ndarray | None

    @property
    def spaces(self) -> list[Space]:
        return sorted({s for spaces in self.spaces_for.values() for s in spaces}, key=lambda s: s.name)


def plan(query: Query, encoder: Encoder, present: set[str], store: Store) -> Plan:
    """Targets the index holds, each with its own space and the extra spaces it has vectors in; the
    path and date filters as ids, so FAISS returns only those."""
    targets = [m for m in resolve_targets(query.target, encoder, query.lead_kind()) if m in present]
    spaces_for = {m: [s for s in get(m).spaces if s.name in present] for m in targets}
    allowed = None
    if query.path is not None or query.after is not None or query.before is not None:
        allowed = store.filter_ids(targets, query.path, query.after, query.before)
    return Plan(spaces_for, allowed)


# -- candidates ------------------------------------------------------------------------------------------
def candidates(query: Query, qvecs: np.ndarray, plan: Plan, index: SpaceSet, fetch: int) -> set[int]:
    """The union of each positive part's ``fetch`` nearest items in every planned space it may compare with
    (text-derived spaces answer text parts only)."""
    found: set[int] = set()
    for pi, part in enumerate(query.parts):
        if part.negative:
            continue
        for space in plan.spaces:
            if space.text_derived and part.kind != "text":
                continue
            _, ids = index.search(space.name, qvecs[pi : pi + 1], fetch, plan.allowed)
            found.update(int(i) for i in ids[0] if i >= 0)
    return found


def exhausted(plan: Plan, index: SpaceSet, fetch: int) -> bool:
    """Whether ``fetch`` already covers every vector of every planned space."""
    return all(fetch >= index.ntotal(s.name) for s in plan.spaces)


# -- re-score, fuse, refine --------------------------------------------------------------------------------
def rescore_and_fuse(
    query: Query, qvecs: np.ndarray, cands: Sequence[int], plan: Plan, store: Store, calibration: Calibration
) -> list[Scored]:
    """Exact similarities from SQLite's vectors, fused per item (see :mod:`mmsearch.search.fusion`), then
    refined: the score threshold and de-duplication."""
    if not cands:
        return []
    modality_of = store.modalities_of(cands)
    cands = [c for c in cands if c in modality_of]
    vectors = store.vectors_of(cands, [s.name for s in plan.spaces])
    moments = moment_vectors(store, cands, modality_of)
    ranked = fuse(query, qvecs, cands, modality_of, vectors, plan.spaces_for, calibration, moments)
    return refine(query, ranked, modality_of, vectors, store)


def moment_vectors(store: Store, cands: Sequence[int], modality_of: dict[int, str]) -> dict[int, np.ndarray]:
    """The segment vectors that rank, for candidates whose modality ranks by its best moment."""
    kinds = {m: get(m).moments for m in set(modality_of.values())}
    ranked_by_moment = [c for c in cands if kinds.get(modality_of[c])]
    out: dict[int, np.ndarray] = {}
    for c, segments in store.segments_of(ranked_by_moment).items():
        chosen = [s.vector for s in segments if s.kind in kinds[modality_of[c]]]
        if chosen:
            out[c] = np.stack(chosen)
    return out


def refine(
    query: Query,
    ranked: list[Scored],
    modality_of: dict[int, str],
    vectors: dict[tuple[int, str], np.ndarray],
    store: Store,
) -> list[Scored]:
    """Drop scores under ``min_score``; with ``dedupe``, keep the best of copies (same bytes) and of
    near-identical items (own vectors at least DEDUPE_SIMILARITY alike)."""
    if query.min_score is not None:
        ranked = [r for r in ranked if r.score >= query.min_score]
    if not query.dedupe:
        return ranked
    hashes = store.hashes_of([r.id for r in ranked])
    kept: list[Scored] = []
    seen_hash: set[str] = set()
    kept_vecs: dict[str, list[np.ndarray]] = {}
    for r in ranked:
        m = modality_of[r.id]
        own = vectors.get((r.id, m))
        if hashes.get(r.id) in seen_hash:
            continue
        if own is not None and any(float(own @ v) >= DEDUPE_SIMILARITY for v in kept_vecs.get(m, [])):
            continue
        kept.append(r)
        seen_hash.add(hashes.get(r.id, ""))
        if own is not None:
            kept_vecs.setdefault(m, []).append(own)
    return kept


# -- hits -----------------------------------------------------------------------------------------------
def hits(query: Query, qvecs: np.ndarray, ranked: list[Scored], store: Store) -> list[Hit]:
    """The page ``[offset, offset + k)`` as Hits: path, metadata (its modality's), and for items with
    segments the one that matches the query best."""
    page = ranked[query.offset : query.offset + query.k]
    items = store.get_items([r.id for r in page])
    probe = l2_normalize(qvecs[[i for i, p in enumerate(query.parts) if not p.negative]].sum(axis=0)[None])[0]
    out: list[Hit] = []
    for r in page:
        item = items[r.id]
        modality = get(item.modality)
        meta = modality.metadata(item)
        if modality.segmented:
            meta.update(best_match(store, r.id, probe))
        out.append(Hit(r.id, query.offset + len(out) + 1, r.score, item.path, item.modality, meta, r.explain))
    return out


def best_match(store: Store, item_id: int, query: np.ndarray) -> dict[str, object]:
    """Where in an item a query matches best: its best segment's time span, kind and words."""
    segments = store.segments(item_id)
    if not segments:
        return {}
    sims = np.stack([s.vector for s in segments]) @ np.asarray(query, dtype=np.float32).reshape(-1)
    i = int(np.argmax(sims))  # the first one on ties
    seg = segments[i]
    match: dict[str, object] = {"start": round(seg.start, 2), "end": round(seg.end, 2), "kind": seg.kind}
    if seg.text:
        match["text"] = seg.text
    match["score"] = round(float(sims[i]), 6)
    return {"match": match}
