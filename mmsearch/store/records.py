"""What goes in and out of the store: plain records, no SQLAlchemy objects, no knowledge of modalities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass
class Attrs:
    """What an item stores besides its vectors: the common ``items`` columns, and ``info`` for what is
    its modality's own (a video's frame rate and codec), kept as JSON."""

    width: int | None = None
    height: int | None = None
    duration: float | None = None
    excerpt: str | None = None
    ocr_text: str | None = None
    taken_at: float | None = None  # capture time, epoch seconds: date filters use it before the mtime
    info: dict[str, Any] = field(default_factory=dict)


class SegmentRecord(NamedTuple):
    """A time-stamped stretch of an item (spoken words with their text, a window of sound, a frame) and
    its vector."""

    start: float
    end: float
    kind: str
    vector: np.ndarray
    text: str | None = None


@dataclass
class ItemRecord:
    """What ingest writes for one file (new or changed)."""

    path: str
    modality: str
    size: int
    mtime_ns: int
    content_hash: str
    vector: np.ndarray
    inode: int | None = None
    attrs: Attrs = field(default_factory=Attrs)
    caption: str | None = None
    caption_path: str | None = None
    caption_sig: str | None = None
    segments: Sequence[SegmentRecord] = ()
    extra_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # space name -> vector


class Reusable(NamedTuple):
    """What a file with already-indexed content takes over instead of being decoded and embedded."""

    vector: np.ndarray
    attrs: Attrs
    segments: Sequence[SegmentRecord] = ()
    extras: dict[str, np.ndarray] = {}  # space name -> vector: its other vectors (the modality keeps some)


@dataclass(frozen=True)
class KnownFile:
    """What the store remembers of a file, to decide whether it changed."""

    id: int
    modality: str
    size: int
    mtime_ns: int
    content_hash: str
    caption_sig: str | None
    inode: int | None = None


@dataclass
class IndexInfo:
    """What `mmsearch info` shows."""

    path: str
    model: str | None
    dim: int | None
    fingerprint: str | None
    schema_version: int
    counts: dict[str, int]
    recipes: dict[str, str]
    size_bytes: int
    created: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ItemRow:
    """One row of ``items`` as reads return it (what :meth:`mmsearch.Engine.items` gives; exported as
    ``mmsearch.store.Item``)."""

    id: int
    path: str
    modality: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int | None = None
    height: int | None = None
    excerpt: str | None = None
    caption: str | None = None
    caption_path: str | None = None
    caption_sig: str | None = None
    status: str = "ok"
    indexed_at: float = 0.0
    duration: float | None = None
    ocr_text: str | None = None
    taken_at: float | None = None
    inode: int | None = None
    info: dict[str, Any] | None = None


ITEM_COLUMNS = tuple(ItemRow.__dataclass_fields__)  # the SELECT list reads build rows from, in this order
