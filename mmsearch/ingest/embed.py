"""The mapper's second half: batches of decoded items through their modality's tower, plus the text
vectors of their extra spaces (caption, file-name words, text read in them), in the main thread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmsearch.encoders import TEXT
from mmsearch.encoders.towers import Towers
from mmsearch.modalities import CAPTION, NAME, Modality, Pending, ReadJob, get, name_words
from mmsearch.modalities.base import SPEECH_KIND


def embed_batch(modality: Modality, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
    """Give every item of ``batch`` (read by one modality) its own vector, or an ``error``; then the text
    vectors of the extra spaces of the modality each item turned out to be."""
    modality.embed(batch, towers, job)
    ok = [x for x in batch if x.error is None]
    for name in dict.fromkeys(x.modality for x in ok):
        extra_vectors(get(name), [x for x in ok if x.modality == name], towers)


def extra_vectors(modality: Modality, batch: Sequence[Pending], towers: Towers) -> None:
    """Fill ``item.extras`` (space name -> vector) for the caption, file-name and text-read spaces
    ``modality`` has, in one call of the text tower (speech is the modality's own business)."""
    encoder = towers.get(TEXT)
    if encoder is None:
        return
    extras = [s for s in modality.spaces if s.text_derived and s.kind != SPEECH_KIND]
    if not extras:
        return
    wanted: list[tuple[Pending, str, str]] = []
    for x in batch:
        texts = dict(x.texts)
        if x.caption:
            texts[CAPTION] = x.caption
        texts[NAME] = name_words(x.path)
        for extra in extras:
            text = texts.get(extra.kind)
            if text and text.strip():
                wanted.append((x, extra.name, text))
    if wanted:
        vecs = encoder.encode_text([t for _, _, t in wanted])
        for (x, name, _), v in zip(wanted, vecs, strict=True):
            x.extras[name] = np.asarray(v)
