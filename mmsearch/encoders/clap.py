"""CLAP (Wu et al., 2023) through transformers: ``clap:laion/clap-htsat-unfused``, ``clap:/path/to/model``.

Sounds and their descriptions in one space: text→sound and sound→text. Embeddings equal transformers'
own ``get_text_features`` / ``get_audio_features`` (both L2-normalised), checked in
``tests/test_clap.py`` on a random-init ``ClapConfig`` model. Sounds come in as mono float32 at 48 kHz,
each window at most 10 s (CLAP's own input length): the audio analysis cuts recordings so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders.base import AUDIO, TEXT, EncoderBase, fingerprint_torch, l2_normalize, torch_device
from mmsearch.errors import ModelError

PREFIX = "clap"
WINDOW_SECONDS = 10.0  # what CLAP looks at; longer clips would be cropped at random by its feature extractor


class ClapEncoder(EncoderBase):
    """A CLAP model: a text tower and a sound tower."""

    modalities = frozenset({TEXT, AUDIO})
    audio_window_seconds: float | None = WINDOW_SECONDS

    def __init__(self, spec: str, device: str | None = None) -> None:
        if not spec:
            raise ModelError("bad CLAP model: expected clap:HUB_NAME or clap:/path/to/model")
        import torch
        from transformers import ClapModel, ClapProcessor
        from transformers.utils import logging as hf_logging

        from mmsearch import hub

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        local = os.path.isdir(os.path.expanduser(spec))
        source = str(Path(spec).expanduser()) if local else spec
        # offline: the cache or one line at once, never a minute of retries
        cache_only = not local and not hub.reachable()
        if cache_only and hub.cached(spec, ("config.json",)) is None:
            raise ModelError(
                f"cannot load CLAP model {spec!r}: it is not in the Hugging Face cache and {hub.endpoint()} "
                "cannot be reached (offline?)"
            )
        self.device = device or torch_device()
        try:
            with hub.quiet():
                self.processor: Any = ClapProcessor.from_pretrained(source, local_files_only=cache_only)
                self.model: Any = ClapModel.from_pretrained(source, local_files_only=cache_only)
                self.model = self.model.eval().to(self.device)
        except Exception as e:  # hub, file and config errors alike
            raise ModelError(f"cannot load CLAP model {spec!r}: {str(e).splitlines()[0] if str(e) else e}") from e
        self._torch = torch
        self.name = f"{PREFIX}:{spec}"
        self.dim = int(self.model.config.projection_dim)
        self.audio_sample_rate = int(self.processor.feature_extractor.sampling_rate)
        self.fingerprint = fingerprint_torch(self.model)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._torch.no_grad():
            inputs = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
        return l2_normalize(_pooled(out).float().cpu().numpy())

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 clips at ``audio_sample_rate``, each at most WINDOW_SECONDS long."""
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        limit = int(WINDOW_SECONDS * (self.audio_sample_rate or 48000))
        with self._torch.no_grad():
            features = self.processor.feature_extractor(
                [np.asarray(c, dtype=np.float32)[:limit] for c in clips],
                sampling_rate=self.audio_sample_rate,
                return_tensors="pt",
            )
            out = self.model.get_audio_features(**{k: v.to(self.device) for k, v in features.items()})
        return l2_normalize(_pooled(out).float().cpu().numpy())


def _pooled(out: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the embedding; 4.x the tensor itself."""
    return out.pooler_output if hasattr(out, "pooler_output") else out
