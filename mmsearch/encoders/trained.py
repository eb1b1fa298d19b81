"""A model directory written by `mmsearch train`: a base model plus trained heads.

``MODEL_DIR/config.json`` names the base model and the head shapes; ``MODEL_DIR/heads.pt`` holds
the head weights. Use it anywhere a model name goes: ``--model path/to/MODEL_DIR``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders.base import AUDIO, IMAGE, EncoderBase, trainable
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

FORMAT = "mmsearch-heads/1"
CONFIG = "config.json"
WEIGHTS = "heads.pt"


def is_model_dir(name: str) -> bool:
    path = Path(name).expanduser()
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read model config {path / CONFIG}: {e}") from e
    if config.get("format") != FORMAT:
        raise ModelError(f"{path} is not an mmsearch model directory (format {config.get('format')!r})")
    return config


class TrainedEncoder(EncoderBase):
    """Base encoder + heads. Same space and dimension as the base (and its declared capabilities)."""

    def __init__(self, path: Path) -> None:
        import torch

        from mmsearch.encoders import load_encoder
        from mmsearch.encoders.heads import Heads

        self.path = path.expanduser().resolve()
        config = read_config(self.path)
        head_cfg = config["heads"]
        self.trained_modality = str(head_cfg.get("modality", IMAGE))
        self.unfreeze = int(head_cfg.get("unfreeze_image", 0))
        base = trainable(load_encoder(config["base"]), self.trained_modality, self.unfreeze)
        self.base = base
        trunk = base.trainable_tail(self.unfreeze) if self.unfreeze else None
        self.heads = Heads(
            head_cfg["feature_dim"],
            head_cfg["dim"],
            head_cfg["train_text"],
            trunk,
            self.unfreeze,
            self.trained_modality,
        )
        try:
            data = (self.path / WEIGHTS).read_bytes()  # read once: loaded and fingerprinted
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            self.heads.load_state_dict(state)
        except (OSError, RuntimeError, KeyError) as e:
            raise ModelError(f"cannot load trained heads from {self.path / WEIGHTS}: {e}") from e
        self.heads.eval()
        self._torch = torch
        self.name = str(self.path)
        self.dim = int(self.base.dim)
        self.modalities = frozenset(self.base.modalities)
        self.image_size = base.image_size
        self.audio_sample_rate = base.audio_sample_rate
        self.fingerprint = hashlib.sha256(f"{self.base.fingerprint}:".encode() + data).hexdigest()[:16]
        self.config = config

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        base = self.base.encode_text(texts)
        if self.heads.text is None or len(texts) == 0:
            return base
        with self._torch.no_grad():
            return self.heads.text_out(self._torch.from_numpy(base)).numpy()

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        if IMAGE not in self.modalities:
            raise ModelError(f"{self.name} cannot embed images")
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.trained_modality != IMAGE:
            return self.base.encode_image(images)
        if self.unfreeze:
            base, feats = self.base.image_activations(images, self.unfreeze)
        else:
            base, feats = self.base.image_features(images)
        with self._torch.no_grad():
            out = self.heads.image_out(self._torch.from_numpy(base), self._torch.from_numpy(feats))
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Sound clips through the base sound tower, and the trained head when it was trained on sounds."""
        if self.trained_modality != AUDIO:
            return self.base.encode_audio(clips)
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        base, feats = self.base.audio_features(clips)
        with self._torch.no_grad():
            out = self.heads.image_out(self._torch.from_numpy(base), self._torch.from_numpy(feats))
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)
