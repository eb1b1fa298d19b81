"""OpenCLIP backend: ``openclip:<arch>/<pretrained-tag>`` and ``openclip:<arch>@<checkpoint file>``.

Pretrained tags download weights from the model hub on first use (the user's machine has
internet); a local checkpoint file loads offline. Embeddings are exactly open_clip's
``encode_image`` / ``encode_text`` followed by L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders.base import IMAGE, TEXT, fingerprint_torch, l2_normalize, torch_device
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

PREFIX = "openclip"


def parse_spec(spec: str) -> tuple[str, str | None, Path | None]:
    """Split ``ARCH/TAG`` or ``ARCH@FILE`` into (arch, tag, checkpoint)."""
    if "@" in spec:
        arch, _, ckpt = spec.partition("@")
        if not arch or not ckpt:
            raise ModelError(f"bad OpenCLIP model {spec!r}: expected openclip:ARCH@/path/to/checkpoint")
        return arch, None, Path(ckpt).expanduser()
    arch, sep, tag = spec.partition("/")
    if not arch or not sep or not tag:
        raise ModelError(
            f"bad OpenCLIP model {spec!r}: expected openclip:ARCH/PRETRAINED (e.g. openclip:ViT-B-32/openai)"
        )
    return arch, tag, None


class OpenClipEncoder:
    """A CLIP model from open_clip_torch, text + image."""

    modalities = frozenset({TEXT, IMAGE})

    def __init__(self, spec: str, device: str | None = None) -> None:
        import open_clip
        import torch

        arch, tag, ckpt = parse_spec(spec)
        if arch not in open_clip.list_models():
            raise ModelError(f"unknown OpenCLIP architecture {arch!r} (see `mmsearch models --all`)")
        if ckpt is not None and not ckpt.is_file():
            raise ModelError(f"OpenCLIP checkpoint not found: {ckpt}")
        self.device = device or torch_device()
        pretrained = str(ckpt) if ckpt is not None else tag
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=self.device
            )
        except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors alike
            hint = " (offline? use --model builtin, which needs no download)" if ckpt is None else ""
            raise ModelError(f"cannot load OpenCLIP model {arch} ({pretrained}): {e}{hint}") from e
        model.eval()
        self._torch = torch
        self.model: Any = model
        self.preprocess = preprocess
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name = f"{PREFIX}:{arch}@{ckpt}" if ckpt is not None else f"{PREFIX}:{arch}/{tag}"
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])
        self.fingerprint = fingerprint_torch(self.model)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self.device)
            out = self.model.encode_text(tokens).float().cpu().numpy()
        return l2_normalize(out)

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.image_features(images)[0]

    @property
    def feature_dim(self) -> int:
        return self.dim

    def image_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(normalised embeddings, raw embeddings): what trained heads read (``mmsearch train``)."""
        with self._torch.no_grad():
            batch = self._torch.stack([self.preprocess(im) for im in images]).to(self.device)
            out = self.model.encode_image(batch).float().cpu().numpy()
        return l2_normalize(out), np.ascontiguousarray(out, dtype=np.float32)


def list_pretrained() -> list[tuple[str, str, int | None]]:
    """(arch, tag, embed dim) for every pretrained OpenCLIP model; no downloads."""
    import open_clip

    out = []
    for arch, tag in open_clip.list_pretrained():
        cfg = open_clip.get_model_config(arch) or {}
        out.append((arch, tag, cfg.get("embed_dim")))
    return out
