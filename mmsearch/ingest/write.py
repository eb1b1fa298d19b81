"""The writer stage: one SQLite transaction per batch, then the same changes to the FAISS indexes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.modalities import Pending, get
from mmsearch.store import ItemRecord, KnownFile, Store


class VectorSink(Protocol):
    """Where committed vectors go (the index's :class:`~mmsearch.spaceset.SpaceSet`)."""

    def add(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, space: str, ids: Sequence[int]) -> None: ...


def record(x: Pending) -> ItemRecord:
    assert x.vector is not None
    return ItemRecord(
        path=x.path,
        modality=x.modality,
        size=x.size,
        mtime_ns=x.mtime_ns,
        content_hash=x.content_hash,
        vector=x.vector,
        inode=x.inode,
        attrs=x.attrs,
        caption=x.caption,
        caption_path=x.caption_path,
        caption_sig=x.caption_sig,
        segments=x.segments,
        extra_vectors=x.extras,
    )


def write(store: Store, sink: VectorSink, batch: Sequence[Pending], replace: dict[str, KnownFile]) -> tuple[int, int]:
    """Commit ``batch`` (new items, and changed ones keeping their ids), then update the sink.

    Returns:
        (added, updated).
    """
    records = [record(x) for x in batch]
    replace_ids = {r.path: replace[r.path].id for r in records if r.path in replace}
    old_spaces = store.spaces_of(list(replace_ids.values()))
    ids = store.write_batch(records, replace_ids)
    for path, item_id in replace_ids.items():
        # every space the item may be in: what SQLite had, and all of its modality's (no-ops if absent)
        spaces = {*old_spaces.get(item_id, []), *_space_names(replace[path].modality)}
        for space in spaces:
            sink.remove(space, [item_id])
    by_space: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for rec, item_id in zip(records, ids, strict=True):
        for space, vec in [(rec.modality, rec.vector), *rec.extra_vectors.items()]:
            bucket = by_space.setdefault(space, ([], []))
            bucket[0].append(item_id)
            bucket[1].append(vec)
    for space, (sids, svecs) in by_space.items():
        sink.add(space, sids, np.stack(svecs))
    return len(records) - len(replace_ids), len(replace_ids)


def _space_names(modality: str) -> list[str]:
    try:
        return [s.name for s in get(modality).spaces]
    except MmsearchError:  # a modality no longer registered: what SQLite had is all there is
        return [modality]


def delete(store: Store, sink: VectorSink, ids: list[int]) -> int:
    """Remove items (deleted files, files that now fail) from SQLite, then from the sink."""
    if not ids:
        return 0
    for space, removed in store.delete_items(ids).items():
        sink.remove(space, removed)
    return len(ids)
