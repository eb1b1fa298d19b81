"""The stages of a search, each a function of its inputs (clip-back's ``KnnService.query`` names its
steps the same way): plan the spaces -> embed the query in each tower's space -> candidates from FAISS ->
exact re-score from SQLite -> fuse -> refine (threshold, dedupe) -> hits."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mmsearch.encoders import TEXT, l2_normalize
from mmsearch.encoders.towers import Towers
from mmsearch.errors import QueryError
from mmsearch.modalities import VECTOR, Space, get, indexable
from mmsearch.search.fusion import DEDUPE_SIMILARITY, Calibration, Scored, fuse
from mmsearch.search.hit import Hit
from mmsearch.search.query import ANY, Query, QueryPart
from mmsearch.spaceset import SpaceSet
from mmsearch.store import Item, Store
from mmsearch.store.records import SegmentRecord


# -- plan -------------------------------------------------------------------------------------------------
def resolve_targets(target: str | None, towers: Towers, default: str | None = None) -> list[str]:
    """The modalities to search. Default: ``default`` (the kind of a picture or sound query), else the
    first modality the model can embed (pictures, when it has an image tower)."""
    searchable = [m.name for m in indexable(towers)]
    if not searchable:
        raise QueryError(f"model {towers.name} embeds nothing mmsearch indexes")
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
        raise QueryError(f"model {towers.name} does not embed {target} items, so there are none to search")
    return [target]


@dataclass
class Plan:
    """Which spaces a query searches, per target modality, and the ids its filters allow (None: all)."""

    spaces_for: dict[str, list[Space]]
    allowed: np.ndarray | None

    @property
    def spaces(self) -> list[Space]:
        return sorted({s for spaces in self.spaces_for.values() for s in spaces}, key=lambda s: s.name)

    @property
    def roles(self) -> set[str]:
        """The towers whose spaces are searched, and those of the targets' segments (where a hit matched)."""
        roles = {s.tower for s in self.spaces}
        for m in self.spaces_for:
            roles.update(get(m).segment_roles.values())
        return roles


def plan(query: Query, towers: Towers, present: set[str], store: Store) -> Plan:
    """Targets the index holds, each with its own space and the extra spaces it has vectors in; the
    path and date filters as ids, so FAISS returns only those."""
    targets = [m for m in resolve_targets(query.target, towers, query.lead_kind()) if m in present]
    spaces_for = {m: [s for s in get(m).spaces if s.name in present] for m in targets}
    allowed = None
    if query.path is not None or query.after is not None or query.before is not None:
        allowed = store.filter_ids(targets, query.path, query.after, query.before)
    return Plan(spaces_for, allowed)


# -- embed ------------------------------------------------------------------------------------------------
@dataclass
class QueryVectors:
    """Each part's vector in each tower's space it reaches (a text part: every text tower; a sound with no
    words: no text space), L2-normalised."""

    parts: Sequence[QueryPart]
    by_part: list[dict[str, np.ndarray]]
    towers: Towers

    def get(self, part: int, space: Space) -> np.ndarray | None:
        """The part's vector for ``space``; None when the part cannot be compared with it (text-derived
        spaces answer text parts only)."""
        if space.text_derived and self.parts[part].kind != TEXT:
            return None
        return self.by_part[part].get(space.tower)

    def probe(self, role: str) -> np.ndarray | None:
        """The positive parts together in ``role``'s space: what a hit's best segment is chosen by."""
        vecs = [v[role] for p, v in zip(self.parts, self.by_part, strict=True) if not p.negative and role in v]
        return l2_normalize(np.sum(vecs, axis=0)[None])[0] if vecs else None


def embed_parts(towers: Towers, parts: Sequence[QueryPart], roles: set[str]) -> QueryVectors:
    """Every part in every role of ``roles`` it reaches, each embedded by its own modality (or given, for
    ``vector``: in the spaces of its length)."""
    out: list[dict[str, np.ndarray]] = []
    for p in parts:
        if p.kind == VECTOR:
            out.append(_given(towers, p, roles))
        else:
            out.append(_normalized(get(p.kind).embed_query(p.value, towers, roles)))
    return QueryVectors(parts, out, towers)


def embed_many(towers: Towers, queries: Sequence[tuple[Sequence[QueryPart], Collection[str]]]) -> list[QueryVectors]:
    """:func:`embed_parts` for several queries (parts, roles) at once: the parts of one kind and roles go
    through their modality together, one tower call for all (what batching concurrent queries saves).

    Raises:
        QueryError: a part cannot be embedded (the caller retries query by query to tell whose).
    """
    out: list[list[dict[str, np.ndarray]]] = [[{} for _ in parts] for parts, _ in queries]
    groups: dict[tuple[str, frozenset[str]], list[tuple[int, int]]] = {}
    for qi, (parts, roles) in enumerate(queries):
        for pi, p in enumerate(parts):
            if p.kind == VECTOR:
                out[qi][pi] = _given(towers, p, roles)
            else:
                groups.setdefault((p.kind, frozenset(roles)), []).append((qi, pi))
    for (kind, roles), where in groups.items():
        values = [queries[qi][0][pi].value for qi, pi in where]
        for (qi, pi), got in zip(where, get(kind).embed_query_batch(values, towers, roles), strict=True):
            out[qi][pi] = _normalized(got)
    return [QueryVectors(parts, vecs, towers) for (parts, _), vecs in zip(queries, out, strict=True)]


def _given(towers: Towers, part: QueryPart, roles: Collection[str]) -> dict[str, np.ndarray]:
    """A ``vector`` part, normalised, in every role whose vectors have its length."""
    vec = np.asarray(part.value, dtype=np.float32).reshape(1, -1)
    fits = {r for r in roles if (e := towers.get(r)) is not None and e.dim == vec.shape[1]}
    if not fits:
        dims = sorted({e.dim for r in roles if (e := towers.get(r)) is not None})
        want = " or ".join(map(str, dims))
        raise QueryError(f"a query vector must have {want} numbers, not {vec.shape[1]}")
    return {r: (vec / max(float(np.linalg.norm(vec)), 1e-12))[0] for r in fits}


def _normalized(got: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {r: l2_normalize(np.asarray(v, dtype=np.float32).reshape(1, -1))[0] for r, v in got.items()}


def check_comparable(qv: QueryVectors, plan: Plan, towers: Towers) -> None:
    """Refuse, in one line, a query none of whose parts can be compared with any space it searches (a
    picture over sounds when no tower holds both): never scores that mean nothing."""
    if not plan.spaces:
        return  # nothing of the targets is indexed: no results, not an error
    for pi, part in enumerate(qv.parts):
        if not part.negative and any(qv.get(pi, s) is not None for s in plan.spaces):
            return
    kinds = sorted({p.kind for p in qv.parts if not p.negative})
    if {m for e in towers.roles.values() for m in e.modalities} == {TEXT}:
        raise QueryError(f"model {towers.name} is text-only: it cannot embed {' or '.join(kinds)} queries")
    raise QueryError(
        f"model {towers.name} cannot compare {' or '.join(kinds)} with {', '.join(plan.spaces_for)}: no tower "
        "holds both, and nothing said in it reaches them"
    )


# -- reads --------------------------------------------------------------------------------------------------
class Reads(Protocol):
    """What re-scoring and hits read from the store (a :class:`~mmsearch.store.Store`, or a batch's
    :class:`Prefetched`)."""

    def modalities_of(self, ids: Sequence[int]) -> dict[int, str]: ...
    def vectors_of(self, ids: Sequence[int], spaces: Sequence[str]) -> dict[tuple[int, str], np.ndarray]: ...
    def segments_of(self, ids: Sequence[int]) -> dict[int, list[SegmentRecord]]: ...
    def hashes_of(self, ids: Sequence[int]) -> dict[int, str]: ...
    def get_items(self, ids: Sequence[int]) -> dict[int, Item]: ...
    def segments(self, item_id: int) -> list[SegmentRecord]: ...


class Prefetched:
    """The reads of a batch of queries, done once for all of them: the modality and vectors of every
    candidate of every query, the items of every page. Anything not prefetched is read from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._modality: dict[int, str] = {}
        self._vectors: dict[tuple[int, str], np.ndarray] = {}
        self._loaded: set[int] = set()
        self._spaces: set[str] = set()
        self._items: dict[int, Item] = {}

    def load(self, ids: Sequence[int], spaces: Sequence[str]) -> None:
        """Read the modalities and vectors (in ``spaces``) of ``ids`` in one go."""
        self._modality = self.store.modalities_of(ids)
        self._vectors = self.store.vectors_of(ids, spaces)
        self._loaded, self._spaces = set(ids), set(spaces)

    def load_items(self, ids: Sequence[int]) -> None:
        self._items = self.store.get_items(ids)

    def modalities_of(self, ids: Sequence[int]) -> dict[int, str]:
        if not self._loaded.issuperset(ids):
            return self.store.modalities_of(ids)
        return {i: self._modality[i] for i in ids if i in self._modality}

    def vectors_of(self, ids: Sequence[int], spaces: Sequence[str]) -> dict[tuple[int, str], np.ndarray]:
        if not self._loaded.issuperset(ids) or not self._spaces.issuperset(spaces):
            return self.store.vectors_of(ids, spaces)
        return {(i, sp): v for i in ids for sp in spaces if (v := self._vectors.get((i, sp))) is not None}

    def get_items(self, ids: Sequence[int]) -> dict[int, Item]:
        if not self._items.keys() >= set(ids):
            return self.store.get_items(ids)
        return {i: self._items[i] for i in ids}

    def segments_of(self, ids: Sequence[int]) -> dict[int, list[SegmentRecord]]:
        return self.store.segments_of(ids)

    def hashes_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self.store.hashes_of(ids)

    def segments(self, item_id: int) -> list[SegmentRecord]:
        return self.store.segments(item_id)


# -- candidates ------------------------------------------------------------------------------------------
def candidates(query: Query, qv: QueryVectors, plan: Plan, index: SpaceSet, fetch: int) -> set[int]:
    """The union of each positive part's ``fetch`` nearest items in every planned space it can be compared
    with."""
    found: set[int] = set()
    for pi, part in enumerate(query.parts):
        if part.negative:
            continue
        for space in plan.spaces:
            q = qv.get(pi, space)
            if q is None:
                continue
            _, ids = index.search(space.name, q[None], fetch, plan.allowed)
            found.update(int(i) for i in ids[0] if i >= 0)
    return found


def candidates_many(
    queries: Sequence[tuple[Query, QueryVectors, Plan]], index: SpaceSet, fetch: Sequence[int]
) -> list[set[int]]:
    """:func:`candidates` for several queries: one FAISS search per space and ``fetch`` for every query
    vector without filters (FAISS's batched search gives each row what a search of that row alone gives);
    filtered queries search alone, with their own allowed ids."""
    found: list[set[int]] = [set() for _ in queries]
    rows: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = {}
    for qi, (query, qv, plan) in enumerate(queries):
        if plan.allowed is not None:
            found[qi] = candidates(query, qv, plan, index, fetch[qi])
            continue
        for pi, part in enumerate(query.parts):
            if part.negative:
                continue
            for space in plan.spaces:
                q = qv.get(pi, space)
                if q is not None:
                    rows.setdefault((space.name, fetch[qi]), []).append((qi, q))
    for (space_name, k), batch in rows.items():
        _, ids = index.search(space_name, np.stack([q for _, q in batch]), k)
        for (qi, _), row in zip(batch, ids, strict=True):
            found[qi].update(int(i) for i in row if i >= 0)
    return found


def exhausted(plan: Plan, index: SpaceSet, fetch: int) -> bool:
    """Whether ``fetch`` already covers every vector of every planned space."""
    return all(fetch >= index.ntotal(s.name) for s in plan.spaces)


# -- re-score, fuse, refine --------------------------------------------------------------------------------
def rescore_and_fuse(
    query: Query, qv: QueryVectors, cands: Sequence[int], plan: Plan, store: Reads, calibration: Calibration
) -> list[Scored]:
    """Exact similarities from SQLite's vectors, fused per item (see :mod:`mmsearch.search.fusion`), then
    refined: the score threshold and de-duplication."""
    if not cands:
        return []
    modality_of = store.modalities_of(cands)
    cands = [c for c in cands if c in modality_of]
    vectors = store.vectors_of(cands, [s.name for s in plan.spaces])
    own_role = {m: spaces[0].tower for m, spaces in plan.spaces_for.items() if spaces}
    moments = {}
    for c, by_role in moment_vectors(store, cands, modality_of).items():
        # a moment stands for the item only in its own space (a frame; a line said, when one tower reads both)
        same = [m for role, m in by_role if qv.towers.same(role, own_role.get(modality_of[c], role))]
        if same:
            moments[c] = np.concatenate(same)
    ranked = fuse(query, qv.get, cands, modality_of, vectors, plan.spaces_for, calibration, moments)
    return refine(query, ranked, modality_of, vectors, store, plan.spaces_for)


def moment_vectors(
    store: Reads, cands: Sequence[int], modality_of: dict[int, str]
) -> dict[int, list[tuple[str, np.ndarray]]]:
    """The segment vectors that rank, by tower role, for candidates whose modality ranks by its best moment."""
    modalities = {m: get(m) for m in set(modality_of.values())}
    ranked_by_moment = [c for c in cands if modalities[modality_of[c]].moments]
    out: dict[int, list[tuple[str, np.ndarray]]] = {}
    for c, segments in store.segments_of(ranked_by_moment).items():
        m = modalities[modality_of[c]]
        by_role: dict[str, list[np.ndarray]] = {}
        for seg in segments:
            if seg.kind in m.moments:
                by_role.setdefault(m.segment_roles.get(seg.kind, m.role), []).append(seg.vector)
        if by_role:
            out[c] = [(role, np.stack(vs)) for role, vs in by_role.items()]
    return out


def refine(
    query: Query,
    ranked: list[Scored],
    modality_of: dict[int, str],
    vectors: dict[tuple[int, str], np.ndarray],
    store: Reads,
    spaces_for: Mapping[str, Sequence[Space]] | None = None,
) -> list[Scored]:
    """Drop scores under ``min_score``; with ``dedupe``, keep the best of copies (same bytes) and of
    near-identical items (vectors at least DEDUPE_SIMILARITY alike in the space that tells items apart: a
    space that answers the item's own kind, such as a recording's sound space, else the own one)."""
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
        key = next((s.name for s in (spaces_for or {}).get(m, ()) if m in s.answers), m)
        if (r.id, key) not in vectors:
            key = m
        own = vectors.get((r.id, key))
        if hashes.get(r.id) in seen_hash:
            continue
        if own is not None and any(float(own @ v) >= DEDUPE_SIMILARITY for v in kept_vecs.get(key, [])):
            continue
        kept.append(r)
        seen_hash.add(hashes.get(r.id, ""))
        if own is not None:
            kept_vecs.setdefault(key, []).append(own)
    return kept


# -- hits -----------------------------------------------------------------------------------------------
def hits(query: Query, qv: QueryVectors, ranked: list[Scored], store: Reads) -> list[Hit]:
    """The page ``[offset, offset + k)`` as Hits: path, metadata (its modality's), and for items with
    segments the one that matches the query best."""
    page = ranked[query.offset : query.offset + query.k]
    items = store.get_items([r.id for r in page])
    out: list[Hit] = []
    for r in page:
        item = items[r.id]
        modality = get(item.modality)
        meta = modality.metadata(item)
        if modality.segmented:
            roles = {modality.role, *modality.segment_roles.values()}
            probes = {role: p for role in roles if (p := qv.probe(role)) is not None}
            meta.update(best_match(store, r.id, probes, modality.segment_roles, modality.role))
        out.append(Hit(r.id, query.offset + len(out) + 1, r.score, item.path, item.modality, meta, r.explain))
    return out


def best_match(
    store: Reads,
    item_id: int,
    probes: Mapping[str, np.ndarray] | np.ndarray,
    segment_roles: Mapping[str, str] | None = None,
    role: str = "",
) -> dict[str, object]:
    """Where in an item a query matches best: its best segment's time span, kind and words. Each segment is
    compared with the query in its own tower's space (``probes`` by role; one vector: the same for all)."""
    segments = store.segments(item_id)
    if not segments:
        return {}
    roles = segment_roles or {}
    sims = []
    for seg in segments:
        probe = probes if isinstance(probes, np.ndarray) else probes.get(roles.get(seg.kind, role))
        sims.append(-np.inf if probe is None else float(seg.vector @ np.asarray(probe, dtype=np.float32).ravel()))
    i = int(np.argmax(sims))  # the first one on ties
    if not np.isfinite(sims[i]):
        return {}
    seg = segments[i]
    match: dict[str, object] = {"start": round(seg.start, 2), "end": round(seg.end, 2), "kind": seg.kind}
    if seg.text:
        match["text"] = seg.text
    match["score"] = round(sims[i], 6)
    return {"match": match}
