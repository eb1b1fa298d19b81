"""CLAP (Wu et al., 2023) through transformers: ``clap:laion/clap-htsat-unfused``, ``clap:/path/to/model``.

Sounds and their descriptions in one space: text→sound and sound→text. Embeddings equal transformers'
own ``get_text_features`` / ``get_audio_features`` (both L2-normalised), checked in
``tests/test_clap.py`` on a random-init ``ClapConfig`` model. Sounds come in as mono float32 at 48 kHz,
each window at most 10 s (CLAP's own input length): the audio analysis cuts recordings so.

The text tower is exported once to ONNX (with its ``tokenizers`` tokenizer) by the first process that loads
the weights on the CPU; later processes encode text in ONNX Runtime without importing torch or transformers,
and load the weights only when a sound is encoded (see :mod:`mmsearch.encoders.onnx_towers`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders.base import AUDIO, TEXT, EncoderBase, fingerprint_torch, l2_normalize, torch_device
from mmsearch.errors import ModelError

PREFIX = "clap"
WINDOW_SECONDS = 10.0  # what CLAP looks at; longer clips would be cropped at random by its feature extractor
KIND = "clap-text"
TEXT_BATCH = 64
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class _Export:
    fingerprint: str
    dim: int
    sample_rate: int
    onnx: Path
    tokenizer: Path


def _source(spec: str) -> tuple[bool, str]:
    local = os.path.isdir(os.path.expanduser(spec))
    return local, str(Path(spec).expanduser()) if local else spec


def _weights_file(spec: str) -> Path | None:
    """The weights' file, when it can be told without transformers (a folder, or the hub cache)."""
    from mmsearch import hub

    local, source = _source(spec)
    if local:
        return next((Path(source) / n for n in WEIGHT_FILES if (Path(source) / n).is_file()), None)
    found = hub.cached(spec, WEIGHT_FILES)
    return Path(found) if found else None


def _exported(spec: str) -> _Export | None:
    from mmsearch.encoders import onnx_towers

    got = onnx_towers.recorded_export(KIND, _weights_file(spec))
    if got is None:
        return None
    info, onnx = got
    try:
        fp, dim, rate = str(info["fingerprint"]), int(info["dim"]), int(info["sample_rate"])
    except (KeyError, TypeError, ValueError):
        return None
    return _Export(fp, dim, rate, onnx, onnx_towers.tokenizer_file(onnx))


def load_clap(spec: str) -> ClapEncoder:
    """A CLAP model: from its text tower's export alone when a process made one (no torch, no transformers),
    else from its weights.

    Raises:
        ModelError: a bad spec, weights that cannot be had or loaded.
    """
    if not spec:
        raise ModelError("bad CLAP model: expected clap:HUB_NAME or clap:/path/to/model")
    light = _exported(spec)
    if light is not None:
        try:
            return ClapEncoder(spec, exported=light)
        except Exception:  # a damaged export (ONNX Runtime raises its own types): load the weights, export again
            from mmsearch.encoders import onnx_towers

            onnx_towers.remove(light.onnx)
            light.tokenizer.unlink(missing_ok=True)
    return ClapEncoder(spec)


class ClapEncoder(EncoderBase):
    """A CLAP model: a text tower and a sound tower."""

    modalities = frozenset({TEXT, AUDIO})
    audio_window_seconds: float | None = WINDOW_SECONDS

    def __init__(self, spec: str, device: str | None = None, exported: _Export | None = None) -> None:
        if not spec:
            raise ModelError("bad CLAP model: expected clap:HUB_NAME or clap:/path/to/model")
        self._spec, self._device = spec, device
        self.name = f"{PREFIX}:{spec}"
        self._lock = threading.Lock()
        self.model: Any = None
        self._session: Any = None
        self._tok: Any = None
        if exported is not None and device in (None, "cpu"):
            from tokenizers import Tokenizer

            from mmsearch.encoders import onnx_towers

            self.fingerprint, self.dim = exported.fingerprint, exported.dim
            self.audio_sample_rate = exported.sample_rate
            self._tok = Tokenizer.from_file(str(exported.tokenizer))
            self._session = onnx_towers.Session(exported.onnx)
            if self._session.inputs != ["ids", "mask"]:
                raise ValueError(f"foreign export {exported.onnx}")
        else:
            self._load()

    @property
    def device(self) -> str:
        return self._device or "cpu"

    def _load(self) -> None:
        """Load the weights in torch (checked against an export already in use), export the text tower."""
        import torch
        from transformers import ClapModel, ClapProcessor
        from transformers.utils import logging as hf_logging

        from mmsearch import hub

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        spec = self._spec
        local, source = _source(spec)
        # offline: the cache or one line at once, never a minute of retries
        cache_only = not local and not hub.reachable()
        if cache_only and hub.cached(spec, ("config.json",)) is None:
            raise ModelError(
                f"cannot load CLAP model {spec!r}: it is not in the Hugging Face cache and {hub.endpoint()} "
                "cannot be reached (offline?)"
            )
        device = self._device or torch_device()
        try:
            with hub.quiet():
                processor: Any = ClapProcessor.from_pretrained(source, local_files_only=cache_only)
                model: Any = ClapModel.from_pretrained(source, local_files_only=cache_only)
                model = model.eval().to(device)
        except Exception as e:  # hub, file and config errors alike
            raise ModelError(f"cannot load CLAP model {spec!r}: {str(e).splitlines()[0] if str(e) else e}") from e
        fingerprint = fingerprint_torch(model)
        if self._session is not None and fingerprint != self.fingerprint:
            raise ModelError(
                f"the weights of {self.name} changed since its text tower was exported (fingerprint {fingerprint}, "
                f"was {self.fingerprint}): run the command again"
            )
        self._torch, self._device, self.processor = torch, device, processor
        self.fingerprint = fingerprint
        self.dim = int(model.config.projection_dim)
        self.audio_sample_rate = int(processor.feature_extractor.sampling_rate)
        self.model = model
        if self._session is None and device == "cpu":
            self._export()

    def _torch_model(self) -> Any:
        with self._lock:
            if self.model is None:
                self._load()
        return self.model

    def _export(self) -> None:
        """Export the text tower and its tokenizer, checked against torch at several lengths; remember the
        outcome for these weights (a failure is not retried by every process)."""
        from mmsearch.encoders import onnx_towers

        weights = _weights_file(self._spec)
        record = onnx_towers.record_file(KIND, weights) if weights is not None else None
        if record is None or not onnx_towers.enabled():
            return
        info = {"fingerprint": self.fingerprint, "dim": self.dim, "sample_rate": self.audio_sample_rate}
        if onnx_towers.read_record(record) == {**info, "onnx": False, "export": onnx_towers.EXPORT_VERSION}:
            return
        onnx = onnx_towers.cache_file(KIND, self.fingerprint)
        opened = self._exported_text(onnx, onnx_towers.tokenizer_file(onnx))
        if opened is None:
            onnx_towers.remove(onnx)
            onnx_towers.tokenizer_file(onnx).unlink(missing_ok=True)
        onnx_towers.write_record(record, {**info, "onnx": opened is not None})
        if opened is not None:
            self._session, self._tok = opened

    def _exported_text(self, onnx: Path, tok_file: Path) -> tuple[Any, Any] | None:
        from tokenizers import Tokenizer

        from mmsearch.encoders import onnx_towers

        model, torch, hf = self.model, self._torch, self.processor.tokenizer
        try:
            tok = _configured(Tokenizer.from_str(hf.backend_tokenizer.to_str()), hf)
            tmp = tok_file.with_name(f"{tok_file.name}.tmp{os.getpid()}")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tok.save(str(tmp))
            os.replace(tmp, tok_file)
        except Exception:  # a slow (Python) tokenizer, or a cache dir that cannot be written
            return None

        def forward(ids: Any, mask: Any) -> Any:
            return _pooled(model.get_text_features(input_ids=ids, attention_mask=mask))

        example = hf(["a dog barking in the rain", "x"], padding=True, truncation=True, return_tensors="pt")
        axes = {"ids": {0: "n", 1: "length"}, "mask": {0: "n", 1: "length"}}
        inputs = (example["input_ids"], example["attention_mask"])
        if not onnx.is_file() and not onnx_towers.export(
            KIND, self.fingerprint, forward, inputs, ("ids", "mask"), axes, modules=(model,)
        ):
            return None
        try:
            session = onnx_towers.Session(onnx)
            tok = Tokenizer.from_file(str(tok_file))
            # a batch, a text alone, and past the model's length when the tokenizer cuts there
            long = "naïve café 🐶 thunder " * (80 if hf.model_max_length < 1_000_000 else 1)
            for texts in (["a dog barking", "x", ""], ["rain"], [long, "bell"]):
                want_ids = hf(texts, padding=True, truncation=True, return_tensors="np")
                ids, mask = _encode(tok, texts)
                with torch.no_grad():
                    want = l2_normalize(forward(*(torch.from_numpy(a) for a in (ids, mask))).float().numpy())
                got = l2_normalize(np.asarray(session.run({"ids": ids, "mask": mask}), dtype=np.float32))
                same = np.array_equal(ids, want_ids["input_ids"]) and np.array_equal(mask, want_ids["attention_mask"])
                if not same or np.abs(got - want).max() > 1e-4:
                    return None
        except Exception:  # ONNX Runtime's own error types: a file it cannot run
            return None
        return session, tok

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is not None and self._tok is not None:
            parts = []
            for i in range(0, len(texts), TEXT_BATCH):
                ids, mask = _encode(self._tok, texts[i : i + TEXT_BATCH])
                parts.append(np.asarray(self._session.run({"ids": ids, "mask": mask}), dtype=np.float32))
            return l2_normalize(np.concatenate(parts))
        model = self._torch_model()
        with self._torch.no_grad():
            inputs = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            out = model.get_text_features(**{k: v.to(self._device) for k, v in inputs.items()})
        return l2_normalize(_pooled(out).float().cpu().numpy())

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 clips at ``audio_sample_rate``, each at most WINDOW_SECONDS long."""
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._torch_model()
        limit = int(WINDOW_SECONDS * (self.audio_sample_rate or 48000))
        with self._torch.no_grad():
            features = self.processor.feature_extractor(
                [np.asarray(c, dtype=np.float32)[:limit] for c in clips],
                sampling_rate=self.audio_sample_rate,
                return_tensors="pt",
            )
            out = model.get_audio_features(**{k: v.to(self._device) for k, v in features.items()})
        return l2_normalize(_pooled(out).float().cpu().numpy())


def _configured(tok: Any, hf: Any) -> Any:
    """``tokenizers``' tokenizer set to do what transformers' call with ``padding=True, truncation=True`` does:
    cut at the model's length, pad to the longest text of the batch."""
    if hf.model_max_length < 1_000_000:  # transformers' "no limit" is 1e30
        tok.enable_truncation(max_length=int(hf.model_max_length))
    tok.enable_padding(pad_id=int(hf.pad_token_id), pad_token=str(hf.pad_token))
    return tok


def _encode(tok: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
    return ids, mask


def _pooled(out: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the embedding; 4.x the tensor itself."""
    return out.pooler_output if hasattr(out, "pooler_output") else out
