"""Retrieval evaluation on a pairs file (item file + caption), CLIP_benchmark style.

Text→item: each caption ranks every item; a hit at k when its own item is in the top k.
Item→text: each item ranks every caption; a hit at k when any of its captions is in the top k.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders import AUDIO, IMAGE, Encoder
from mmsearch.errors import MediaError, MmsearchError
from mmsearch.modalities.image import load_image

if TYPE_CHECKING:
    from PIL import Image

KS = (1, 5, 10)


@dataclass
class Pairs:
    """Unique items (absolute paths) and captions, each caption pointing at its item."""

    items: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_item: list[int] = field(default_factory=list)


def load_pairs(path: str | os.PathLike[str], path_key: str = "filepath", caption_key: str = "caption") -> Pairs:
    """Read a CSV/TSV pairs file with a header. Item paths are relative to the file's folder.

    Raises:
        MmsearchError: unreadable file, missing column, no rows, or an item file that does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MmsearchError(f"cannot read pairs file {path}: {e}") from e
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    fields = reader.fieldnames or []
    for key in (path_key, caption_key):
        if key not in fields:
            raise MmsearchError(
                f"pairs file {path} has no column {key!r} (columns: {', '.join(fields) or 'none'}); "
                "use --path-key/--caption-key"
            )
    pairs = Pairs()
    index: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        rel, caption = (row.get(path_key) or "").strip(), (row.get(caption_key) or "").strip()
        if not rel or not caption:
            raise MmsearchError(f"{path}:{line_no}: empty {path_key if not rel else caption_key}")
        item = str((path.parent / rel).resolve())
        if item not in index:
            if not os.path.isfile(item):
                raise MmsearchError(f"{path}:{line_no}: no such file {rel}")
            index[item] = len(pairs.items)
            pairs.items.append(item)
        pairs.captions.append(caption)
        pairs.caption_item.append(index[item])
    if not pairs.captions:
        raise MmsearchError(f"pairs file {path} has no rows")
    return pairs


def item_modality(item: str) -> str:
    """``image`` or ``audio``, by the modality that claims the file; anything else is an error naming it."""
    from mmsearch.modalities import for_path

    found = for_path(item)
    if found is None or found.name not in (IMAGE, AUDIO):
        raise MmsearchError(f"cannot use {item}: only image and audio items are supported")
    return found.name


def pairs_modality(pairs: Pairs) -> str:
    """The one modality of a pairs file's items (mixing images and sounds in one file is an error)."""
    kinds = {item_modality(i) for i in pairs.items}
    if len(kinds) > 1:
        raise MmsearchError("a pairs file must hold one kind of item: put images and sounds in separate files")
    return kinds.pop()


def embed_audio_items(encoder: Encoder, items: Sequence[str], purpose: str = "evaluate") -> np.ndarray:
    """Each audio file's item vector, exactly as `mmsearch index` computes it."""
    from mmsearch.encoders.towers import plain
    from mmsearch.modalities.audio import analyze

    towers = plain(encoder)
    out = []
    for item in items:
        try:
            out.append(analyze(item, towers).vector)
        except MediaError as e:
            raise MmsearchError(f"cannot {purpose} {item}: {e}") from e
    return np.stack(out)


def load_item_images(items: Sequence[str], purpose: str = "evaluate") -> list[Image.Image]:
    """Decode the image files of a pairs file; a bad one is an error naming it (pairs are curated)."""
    images = []
    for item in items:
        try:
            images.append(load_image(item))
        except (OSError, MediaError) as e:
            raise MmsearchError(f"cannot {purpose} {item}: {e}") from e
    return images


def recall_at_k(
    text_emb: np.ndarray, item_emb: np.ndarray, caption_item: Sequence[int], ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """R@k in both directions from L2-normalised embeddings (cosine similarity)."""
    owner = np.asarray(caption_item)
    sims = text_emb @ item_emb.T  # [captions, items]
    # rank of the right item for each caption: how many items score strictly higher
    own = sims[np.arange(len(owner)), owner]
    t2i_rank = (sims > own[:, None]).sum(axis=1)
    # for each item: the best rank among its captions
    order = np.argsort(-sims.T, axis=1, kind="stable")  # [items, captions]
    i2t_rank = np.array([int(np.flatnonzero(owner[order[i]] == i)[0]) for i in range(item_emb.shape[0])])
    return {
        "text_to_item": {f"R@{k}": float(np.mean(t2i_rank < k)) for k in ks},
        "item_to_text": {f"R@{k}": float(np.mean(i2t_rank < k)) for k in ks},
    }


def evaluate(
    encoder: Encoder,
    pairs: Pairs,
    batch_size: int = 32,
    advance: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Embed the pairs with ``encoder`` and report recall; the `mmsearch eval --json` shape."""
    from mmsearch.encoders.towers import plain
    from mmsearch.modalities.audio import can_index_audio

    modality = pairs_modality(pairs)
    if modality == IMAGE and IMAGE not in encoder.modalities:
        raise MmsearchError(f"model {encoder.name} cannot embed images")
    if modality == AUDIO and not can_index_audio(plain(encoder)):
        raise MmsearchError(f"model {encoder.name} cannot embed audio")
    item_vecs = []
    for start in range(0, len(pairs.items), batch_size):
        chunk = pairs.items[start : start + batch_size]
        if modality == IMAGE:
            item_vecs.append(encoder.encode_image(load_item_images(chunk)))
        else:
            item_vecs.append(embed_audio_items(encoder, chunk))
        advance(len(chunk))
    text_vecs = []
    for start in range(0, len(pairs.captions), batch_size):
        chunk = pairs.captions[start : start + batch_size]
        text_vecs.append(encoder.encode_text(chunk))
        advance(len(chunk))
    result = recall_at_k(np.concatenate(text_vecs), np.concatenate(item_vecs), pairs.caption_item)
    return {
        "model": encoder.name,
        "modality": modality,
        "pairs": len(pairs.captions),
        "items": len(pairs.items),
        **result,
    }
