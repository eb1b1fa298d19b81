"""The one protocol every encoder backend implements."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

TEXT = "text"
IMAGE = "image"
AUDIO = "audio"
MODALITIES = (IMAGE, TEXT, AUDIO)


class Encoder(Protocol):
    """Maps items of one or more modalities into one vector space, and says what it can do.

    Every ``encode_*`` returns a float32 C-contiguous array of shape ``[n, dim]`` whose rows are
    L2-normalised, so inner product is cosine similarity. ``encode_*`` of a tower the encoder lacks
    raises :class:`~mmsearch.errors.ModelError`; callers decide from the declared attributes instead
    of trying.

    Attributes:
        name: The registry name that loads this encoder again (``openclip:ViT-B-32/openai``).
        dim: Vector dimension.
        modalities: The towers it has: a subset of ``{"text", "image", "audio"}``.
        fingerprint: A short hash of the weights; an index refuses a model whose fingerprint differs.
        image_size: The side in pixels the image tower looks at (indexing decodes JPEGs only that
            large, which is most of the cost of a camera photo); None without an image tower.
        audio_sample_rate: The rate (Hz) the sound tower takes; None without a sound tower.
        audio_window_seconds: The longest clip the sound tower looks at whole (CLAP: 10 s); None: any.
        feature_dims: Per modality, the size of the features ``image_features`` / ``audio_features``
            return for `mmsearch train` to put a head on; empty when it cannot be trained.
        unfreezable: How many final stages of the image tower `mmsearch train --unfreeze-image` may
            train (``image_activations`` and ``trainable_tail``); 0 for most encoders.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def modalities(self) -> frozenset[str]: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def image_size(self) -> int | None: ...

    @property
    def audio_sample_rate(self) -> int | None: ...

    @property
    def audio_window_seconds(self) -> float | None: ...

    @property
    def feature_dims(self) -> Mapping[str, int]: ...

    @property
    def unfreezable(self) -> int: ...

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray: ...


class TrainableEncoder(Encoder, Protocol):
    """An encoder that declared ``feature_dims`` (and maybe ``unfreezable``): what `mmsearch train` reads."""

    def image_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]: ...

    def audio_features(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...

    def image_activations(self, images: Sequence[Image.Image], unfreeze: int) -> tuple[np.ndarray, np.ndarray]: ...

    def trainable_tail(self, unfreeze: int) -> Any: ...


def trainable(encoder: Encoder, modality: str, unfreeze: int = 0) -> TrainableEncoder:
    """``encoder`` as a TrainableEncoder for heads on ``modality``, by what it declared.

    Raises:
        ModelError: it declared no trainable features for ``modality``, or fewer unfreezable stages.
    """
    if modality not in encoder.feature_dims:
        raise ModelError(f"model {encoder.name} has no trainable {modality} features (builtin and OpenCLIP do)")
    if unfreeze and not (modality == IMAGE and 1 <= unfreeze <= encoder.unfreezable):
        if encoder.unfreezable:
            raise ModelError(f"--unfreeze-image must be between 1 and {encoder.unfreezable} for {encoder.name}")
        raise ModelError(f"--unfreeze-image is not available for {encoder.name} (builtin only)")
    return cast(TrainableEncoder, encoder)


# What every encoder must declare; load_encoder checks them so a plugin that forgets one fails at load.
DECLARED = (
    "name", "dim", "modalities", "fingerprint", "image_size", "audio_sample_rate", "audio_window_seconds",
    "feature_dims", "unfreezable",
)  # fmt: skip


class EncoderBase:
    """Defaults for the declared capabilities: no image or sound tower, nothing to train.

    A backend sets what it has and overrides the ``encode_*`` of its towers; the others refuse.
    """

    name: str = "?"
    dim: int = 0
    modalities: frozenset[str] = frozenset()
    fingerprint: str = ""
    image_size: int | None = None
    audio_sample_rate: int | None = None
    audio_window_seconds: float | None = None
    feature_dims: Mapping[str, int] = {}
    unfreezable: int = 0

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelError(f"model {self.name} has no text tower: it cannot embed text")

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ModelError(f"model {self.name} has no image tower: it cannot embed pictures")

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        raise ModelError(f"model {self.name} has no sound tower: it cannot embed sounds")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32 C-contiguous; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def fingerprint_arrays(named: Iterable[tuple[str, np.ndarray]]) -> str:
    """A cheap, stable fingerprint of model weights.

    Hashes every tensor's name, shape and a strided sample of up to 1024 of its values, so
    two checkpoints of one architecture differ while a 600 MB model hashes in milliseconds.
    """
    h = hashlib.sha256()
    for name, arr in named:
        flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        step = max(1, flat.size // 1024)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(flat[::step].tobytes())
    return h.hexdigest()[:16]


def fingerprint_torch(module: object) -> str:
    """Fingerprint of a ``torch.nn.Module``'s state dict (see :func:`fingerprint_arrays`)."""
    state = module.state_dict()  # type: ignore[attr-defined]
    return fingerprint_arrays(
        (k, v.detach().float().cpu().numpy()) for k, v in sorted(state.items()) if v.is_floating_point()
    )


def cached_fingerprint(cache: Path, compute: Callable[[], str]) -> str:
    """A 16-character fingerprint kept in the file ``cache`` (written atomically), else ``compute()``d and
    kept there; a cache dir that cannot be written only costs computing it again next process."""
    try:
        cached = cache.read_text().strip()
        if len(cached) == 16:
            return cached
    except OSError:
        pass
    fp = compute()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        tmp.write_text(fp)
        os.replace(tmp, cache)
    except OSError:
        pass
    return fp


def torch_device() -> str:
    """The device asked for (``--device``, :mod:`mmsearch.device`): by default ``cuda`` when torch sees a
    GPU, else ``cpu``."""
    from mmsearch import device

    return device.torch_device()
