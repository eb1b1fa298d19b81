"""The one protocol every encoder backend implements."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

TEXT = "text"
IMAGE = "image"
AUDIO = "audio"
MODALITIES = (IMAGE, TEXT, AUDIO)


@runtime_checkable
class Encoder(Protocol):
    """Maps items of one or more modalities into one vector space.

    Every ``encode_*`` returns a float32 C-contiguous array of shape ``[n, dim]`` whose rows are
    L2-normalised, so inner product is cosine similarity.

    Attributes:
        name: The registry name that loads this encoder again (``openclip:ViT-B-32/openai``).
        dim: Vector dimension.
        modalities: The modalities this encoder embeds (``{"text", "image"}``).
        fingerprint: A short hash of the weights; an index refuses a model whose fingerprint differs.

    An image encoder may also say ``image_size``, the side in pixels its model looks at: indexing
    then decodes JPEGs only that large (DCT scaling), which is most of the cost of a camera photo.
    """

    name: str
    dim: int
    modalities: frozenset[str]
    fingerprint: str

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray: ...


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


def torch_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
