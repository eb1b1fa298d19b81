"""Notes (.txt, .md): embedded by the text tower, by their first MiB."""

from __future__ import annotations

import codecs
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mmsearch.encoders import TEXT
from mmsearch.errors import MediaError, ModelError
from mmsearch.files import prefix_hash
from mmsearch.modalities.base import BaseModality, Pending, ReadJob, Space

if TYPE_CHECKING:
    from mmsearch.encoders.towers import Towers

TEXT_EXTS = frozenset({".txt", ".md"})
# A note is embedded (and hashed) by its first MiB: a 6 GB log is read that far and no further.
MAX_TEXT_BYTES = 1 << 20
EXCERPT_CHARS = 400
MAX_EMBED_CHARS = 100_000  # one text to embed on request (models read a few hundred tokens of it)


def decode_text(data: bytes) -> str:
    """Bytes of a .txt/.md file to text (UTF-8, UTF-16 with a BOM, else Latin-1).

    Raises:
        MediaError: binary or empty content.
    """
    data = data[:MAX_TEXT_BYTES]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Windows Notepad's "Unicode"
        text = data.decode("utf-16", errors="replace")
    elif b"\x00" in data:
        raise MediaError("binary content in a text file")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    text = text.strip()
    if not text:
        raise MediaError("empty text file")
    return text


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


class TextModality(BaseModality):
    name = TEXT
    label = ("note", "notes")
    spaces = (Space(TEXT),)
    text_like = True
    media_types = {".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}

    def indexable(self, towers: Towers) -> bool:
        return towers.get(TEXT) is not None

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        data = f.read(MAX_TEXT_BYTES)
        item.content_hash = prefix_hash(data, item.size)
        text = decode_text(data)
        reused = job.reusable(item.content_hash)
        if reused is not None:
            item.adopt(reused)
        else:
            item.payload = text
        item.attrs.excerpt = excerpt(text)

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        need = [x for x in batch if x.vector is None]
        if need:
            vecs = towers.need(TEXT).encode_text([x.payload for x in need])
            for x, v in zip(need, vecs, strict=True):
                x.vector, x.payload, x.fresh = v, None, True

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        return self.embed_query_batch([value], towers, roles)[0]

    def embed_query_batch(
        self, values: Sequence[Any], towers: Towers, roles: Collection[str]
    ) -> list[dict[str, np.ndarray]]:
        texts = [str(v).strip() for v in values]
        by_encoder: dict[int, np.ndarray] = {}  # roles one encoder fills share one call: all texts at once
        out: list[dict[str, np.ndarray]] = [{} for _ in texts]
        for role in roles:
            enc = towers.get(role)
            if enc is not None and TEXT in enc.modalities:
                if id(enc) not in by_encoder:
                    by_encoder[id(enc)] = enc.encode_text(texts)
                for i, v in enumerate(by_encoder[id(enc)]):
                    out[i][role] = v[None]
        return out

    def embed_queries(self, values: Sequence[Any], towers: Towers, role: str) -> np.ndarray:
        from mmsearch.search.grammar import check_text

        enc = towers.need(role)
        if TEXT not in enc.modalities:
            raise ModelError(f"model {towers.name} cannot embed text into its {role} space")
        for t in values:
            check_text(t, "text", MAX_EMBED_CHARS)
        return enc.encode_text(list(values))  # one batch, not one call per text

    def about(self, metadata: Mapping[str, Any]) -> str:
        return str(metadata.get("excerpt") or "")
