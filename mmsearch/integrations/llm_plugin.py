"""mmsearch's encoders as embedding models of `llm <https://llm.datasette.io>`_ (``pip install llm``; the
plugin is found through the ``llm`` entry point, nothing to register by hand).

    llm embed -m mmsearch-builtin -c "a dog on the beach"        # the zero-download model
    llm embed-multi photos --files ~/Pictures '*.jpg' --binary -m mmsearch-builtin
    llm embed -m mmsearch-index -c "receipts"                    # the model of your mmsearch index

``mmsearch-builtin`` embeds text and pictures (binary content) in the builtin model's shared space.
``mmsearch-index`` embeds them as queries of the index at ``$MMSEARCH_INDEX`` (or the default one) are
embedded, so the vectors compare with the ones mmsearch stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import llm

from mmsearch.encoders import TEXT

MAX_BINARY_BYTES = 64 << 20  # a picture of llm's --binary content; anything larger is refused


def _pictures(blobs: Sequence[bytes]) -> list[Any]:
    from mmsearch.errors import MediaError
    from mmsearch.modalities.image import decode_image

    out = []
    for blob in blobs:
        if len(blob) > MAX_BINARY_BYTES:
            raise ValueError(f"binary content over {MAX_BINARY_BYTES >> 20} MiB is no picture mmsearch reads")
        try:
            out.append(decode_image(bytes(blob)).image)
        except MediaError as e:
            raise ValueError(f"binary content is not a picture mmsearch reads: {e}") from e
    return out


class _MmsearchModel(llm.EmbeddingModel):
    supports_text = True
    supports_binary = True
    batch_size = 32

    def _embed(self, kind: str, values: list[Any]) -> Any:
        raise NotImplementedError

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        items = list(items)  # (no key: these models run here)
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        blobs = [i for i, item in enumerate(items) if not isinstance(item, str)]
        vectors: dict[int, list[float]] = {}
        if texts:
            for i, v in zip(texts, self._embed(TEXT, [items[i] for i in texts]), strict=True):
                vectors[i] = [float(x) for x in v]
        if blobs:
            pictures = _pictures([items[i] for i in blobs])  # type: ignore[misc]
            for i, v in zip(blobs, self._embed("image", pictures), strict=True):
                vectors[i] = [float(x) for x in v]
        for i in range(len(items)):
            yield vectors[i]


class BuiltinModel(_MmsearchModel):
    """The builtin model: MiniLM for text, and pictures mapped into the same space; no download."""

    model_id = "mmsearch-builtin"

    def _embed(self, kind: str, values: list[Any]) -> Any:
        from mmsearch.encoders import load_encoder

        enc = load_encoder("builtin")
        return enc.encode_text(values) if kind == TEXT else enc.encode_image(values)


class IndexModel(_MmsearchModel):
    """The model of an mmsearch index, embedding as its queries are embedded."""

    model_id = "mmsearch-index"

    _engine: Any = None

    def _embed(self, kind: str, values: list[Any]) -> Any:
        from mmsearch import Engine
        from mmsearch.errors import MmsearchError

        try:
            if self._engine is None:
                self._engine = Engine.open()  # $MMSEARCH_INDEX or the default index, kept open
            eng = self._engine
            # a text goes into the pictures' space when the index has one (what a text query searches)
            return eng.embed(kind, values, target="image" if eng.towers.get("image") is not None else None)
        except MmsearchError as e:
            raise ValueError(str(e).splitlines()[0]) from e


@llm.hookimpl
def register_embedding_models(register: Any) -> None:
    register(BuiltinModel())
    register(IndexModel())
