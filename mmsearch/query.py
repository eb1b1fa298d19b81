"""Query embedding, target resolution and ranking across the per-modality FAISS indexes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders import AUDIO, IMAGE, TEXT, Encoder, l2_normalize
from mmsearch.errors import MediaError, QueryError
from mmsearch.media import load_image

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch.store.models import Item

TARGETS = (IMAGE, TEXT, AUDIO, "any")
MAX_QUERY_AUDIO_SECONDS = 60.0  # a query sound is heard this far (an hour-long clip took 20 s of the engine)


@dataclass
class Hit:
    """One search result. ``id`` is the SQLite item id (and FAISS id)."""

    id: int
    rank: int
    score: float
    path: str
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)
    explain: list[dict[str, Any]] | None = None  # per part and vector, with `explain`

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": self.path,
            "modality": self.modality,
            "metadata": self.metadata,
        }
        if self.explain is not None:
            out["explain"] = _rounded(self.explain)
        return out


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def item_metadata(item: Item) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "size": item.size,
        "mtime": datetime.fromtimestamp(item.mtime_ns / 1e9, tz=UTC).isoformat(timespec="seconds"),
    }
    if item.width is not None:
        meta["width"], meta["height"] = item.width, item.height
    if item.duration is not None:
        meta["duration"] = round(float(item.duration), 3)
    if item.caption:
        meta["caption"] = item.caption
    if item.ocr_text:
        meta["ocr_text"] = item.ocr_text
    if item.taken_at is not None:
        meta["taken"] = datetime.fromtimestamp(item.taken_at, tz=UTC).isoformat(timespec="seconds")
    if item.excerpt:
        meta["excerpt"] = item.excerpt
    return meta


def embed_query(
    encoder: Encoder,
    text: str | None = None,
    image: str | Path | Image.Image | None = None,
    audio: str | Path | None = None,
) -> np.ndarray:
    """One L2-normalised query vector ``[1, dim]``; text, image and audio parts are averaged."""
    parts: list[np.ndarray] = []
    if text is not None and text.strip():
        if TEXT not in encoder.modalities:
            raise QueryError(f"model {encoder.name} cannot embed text queries")
        parts.append(encoder.encode_text([text.strip()]))
    if image is not None:
        if IMAGE not in encoder.modalities:
            raise QueryError(f"model {encoder.name} is text-only: it cannot embed an image query")
        if isinstance(image, (str, Path)):
            try:
                picture = load_image(image)
            except MediaError as e:
                raise QueryError(f"cannot use {image} as a query image: {e}") from e
        else:
            picture = image.convert("RGB")
        parts.append(encoder.encode_image([picture]))
    if audio is not None:
        from mmsearch.audio_analysis import analyze, can_index_audio

        if not can_index_audio(encoder):
            raise QueryError(f"model {encoder.name} cannot embed an audio query")
        try:
            parts.append(analyze(audio, encoder, max_seconds=MAX_QUERY_AUDIO_SECONDS).vector[None])
        except (MediaError, OSError) as e:
            raise QueryError(f"cannot use {audio} as a query sound: {e}") from e
    if not parts:
        raise QueryError("nothing to search for: give a text query, --image or --audio")
    return l2_normalize(np.sum(parts, axis=0))


def resolve_targets(target: str | None, encoder: Encoder, default: str | None = None) -> list[str]:
    """The spaces to search. Default: ``default`` (the query's own modality for an image or sound query),
    else images when the model has them, else text."""
    from mmsearch.ingest import indexable_modalities

    searchable = indexable_modalities(encoder)
    if target is None:
        target = default if default in searchable else IMAGE if IMAGE in searchable else TEXT
    target = target.lower()
    if target not in TARGETS:
        raise QueryError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    if target == "any":
        return [m for m in (IMAGE, TEXT, AUDIO) if m in searchable]
    if target not in searchable:
        raise QueryError(f"model {encoder.name} does not embed {target} items, so there are none to search")
    return [target]
