"""OpenCLIP backend: ``openclip:<arch>/<pretrained-tag>`` and ``openclip:<arch>@<checkpoint file>``.

Pretrained tags download weights from the model hub on first use (the user's machine has
internet); a local checkpoint file loads offline. Embeddings are exactly open_clip's
``encode_image`` / ``encode_text`` followed by L2 normalisation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders.base import IMAGE, TEXT, EncoderBase, fingerprint_torch, l2_normalize, torch_device
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


# Where the weights of well-known tags live on the hub: enough to tell, without importing open_clip (and
# torch: seconds), that an offline machine does not have them.
HUB_REPOS = {
    ("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai",
    ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai",
    ("MobileCLIP2-S0", "dfndr2b"): "timm/MobileCLIP2-S0-OpenCLIP",
    ("MobileCLIP2-S2", "dfndr2b"): "timm/MobileCLIP2-S2-OpenCLIP",
    ("ViT-B-16-SigLIP2-256", "webli"): "timm/ViT-B-16-SigLIP2-256",
}
WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
)  # fmt: skip


def load_openclip(spec: str) -> OpenClipEncoder:
    """An OpenCLIP model, failing at once (one line, no retries) when its weights must be downloaded and
    the hub cannot be reached.

    Raises:
        ModelError: a bad spec, a missing checkpoint, weights neither cached nor downloadable, a load error.
    """
    from mmsearch import hub

    arch, tag, ckpt = parse_spec(spec)
    if ckpt is not None or hub.reachable():
        return OpenClipEncoder(spec)
    repo = HUB_REPOS.get((arch, tag or ""))
    if repo is not None and hub.cached(repo, WEIGHT_FILES) is None:
        raise ModelError(_unreachable(arch, tag))
    with _env(HF_HUB_OFFLINE="1"):  # the cache only: nothing to retry against
        try:
            return OpenClipEncoder(spec)
        except ModelError as e:
            raise ModelError(_unreachable(arch, tag)) from e


def _unreachable(arch: str, tag: str | None) -> str:
    from mmsearch import hub

    return (
        f"cannot load OpenCLIP model {arch}/{tag}: its weights are not in the Hugging Face cache and "
        f"{hub.endpoint()} cannot be reached (offline?): use --model builtin, which needs no download, "
        f"or openclip:{arch}@/path/to/checkpoint"
    )


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class OpenClipEncoder(EncoderBase):
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
        from mmsearch import hub

        try:
            with hub.quiet():
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
        size = open_clip.get_model_preprocess_cfg(model).get("size", 224)
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name = f"{PREFIX}:{arch}@{ckpt}" if ckpt is not None else f"{PREFIX}:{arch}/{tag}"
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])
        self.fingerprint = fingerprint_torch(self.model)
        self.feature_dims = {IMAGE: self.dim}  # a head trains on the image embedding itself

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
