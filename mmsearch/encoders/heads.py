"""Trainable heads on top of frozen towers. Zero-initialised, so an untrained head is the base model."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

INIT_TEMPERATURE = 0.07


def init_logit_scale() -> torch.nn.Parameter:
    """A learnable ``log(1 / temperature)``, started at CLIP's 1/0.07 (training's InfoNCE reads it)."""
    return torch.nn.Parameter(torch.tensor(math.log(1 / INIT_TEMPERATURE), dtype=torch.float32))


class Heads(torch.nn.Module):
    """``item = normalize(base + W·standardise(features))``; ``text = normalize(base + V·base)`` if trained.

    The item head serves one modality (``image``, or ``audio`` on the sound tower's features; its
    layer keeps the name ``image`` either way). Both residual layers start at zero: before any step
    the trained model *is* the base model, so training starts at zero-shot quality.
    """

    def __init__(
        self,
        feature_dim: int,
        dim: int,
        train_text: bool = False,
        trunk: torch.nn.Module | None = None,
        unfreeze_image: int = 0,
        modality: str = "image",
    ) -> None:
        super().__init__()
        self.modality = modality
        # trunk: trainable copy of the last CNN stages (activations -> feature map), or None (frozen)
        self.trunk = trunk
        self.unfreeze_image = unfreeze_image
        self.image = torch.nn.Linear(feature_dim, dim)
        torch.nn.init.zeros_(self.image.weight)
        torch.nn.init.zeros_(self.image.bias)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.text: torch.nn.Linear | None = None
        if train_text:
            self.text = torch.nn.Linear(dim, dim)
            torch.nn.init.zeros_(self.text.weight)
            torch.nn.init.zeros_(self.text.bias)
        self.logit_scale = init_logit_scale()

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def set_feature_stats(self, features: torch.Tensor) -> None:
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0) + 1e-6)

    def train(self, mode: bool = True) -> Heads:
        super().train(mode)
        if self.trunk is not None:
            self.trunk.eval()  # batch-norm statistics stay those of the pretrained network
        return self

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Frozen features pass through; with a trunk, activations become 2x2-pooled feature maps."""
        if self.trunk is None:
            return inputs
        return F.adaptive_avg_pool2d(self.trunk(inputs), 2).flatten(1)

    def image_out(self, base: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        z = (self.features(inputs) - self.feature_mean) / self.feature_std
        return F.normalize(base + self.image(z), dim=-1)

    def text_out(self, base: torch.Tensor) -> torch.Tensor:
        if self.text is None:
            return base
        return F.normalize(base + self.text(base), dim=-1)

    def config(self) -> dict[str, Any]:
        return {
            "feature_dim": self.image.in_features,
            "dim": self.image.out_features,
            "train_text": self.text is not None,
            "unfreeze_image": self.unfreeze_image,
            "modality": self.modality,
        }
