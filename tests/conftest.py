"""Shared fixtures: a deterministic fake encoder, data dirs under tmp_path, picture makers."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch import encoders
from mmsearch.encoders import IMAGE, TEXT, l2_normalize
from mmsearch.errors import ModelError

# Colour words the fake encoder understands; an image "means" the colours it is made of.
PALETTE = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (20, 40, 220),
    "yellow": (240, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}
COLOURS = list(PALETTE)
DIM = 32


class FakeEncoder:
    """Deterministic text + image encoder (llm's EmbedDemo idea, with a shared space).

    Dimensions 0-5 score the palette colours: an image by how close its mean colour is to each,
    a text by which colour words it names. Dimensions 6-31 hold hashed words for text and coarse
    pixel statistics for images, so texts and images are still distinguishable among themselves.
    """

    modalities = frozenset({TEXT, IMAGE})
    dim = DIM
    image_size = 512  # it averages whatever it gets; decoded at the default size
    audio_sample_rate = None  # no sound tower
    audio_window_seconds = None
    feature_dims: dict[str, int] = {}  # nothing to train
    unfreezable = 0

    def __init__(self, name: str = "fake", fingerprint: str = "fake-v1") -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.calls = {"text": 0, "image": 0}

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        self.calls["text"] += len(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                if word in PALETTE:
                    out[row, COLOURS.index(word)] += 3.0
                else:
                    out[row, 6 + zlib.crc32(word.encode()) % (DIM - 6)] += 0.3
        return l2_normalize(out + 1e-3)

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        raise ModelError(f"model {self.name} has no sound tower")

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls["image"] += len(images)
        out = np.zeros((len(images), DIM), dtype=np.float32)
        for row, im in enumerate(images):
            px = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.float32)
            mean = px.reshape(-1, 3).mean(axis=0)
            for j, c in enumerate(PALETTE.values()):
                out[row, j] = 3.0 * np.exp(-np.sum((mean - np.array(c)) ** 2) / (2 * 60.0**2))
            grid = px.reshape(2, 16, 2, 16, 3).mean(axis=(1, 3)).reshape(-1) / 255.0  # 12 values
            out[row, 6 : 6 + 12] = 0.2 * grid
            out[row, 18:21] = 0.05 * px.reshape(-1, 3).std(axis=0) / 255.0
        return l2_normalize(out + 1e-3)


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeEncoder]:
    """Register `fake` (and `fake2`) as models; returns a function to swap in new weights."""
    current = {"fake": FakeEncoder(), "fake2": FakeEncoder("fake2", "fake2-v1")}
    encoders.register("fake", lambda spec: current["fake"])
    encoders.register("fake2", lambda spec: current["fake2"])

    def swap(fingerprint: str) -> FakeEncoder:
        current["fake"] = FakeEncoder(fingerprint=fingerprint)
        encoders.clear_cache()
        return current["fake"]

    yield swap  # type: ignore[misc]
    # builtin is deterministic and stateless once loaded: kept for the next test (a reload with an empty
    # cache dir costs seconds: its class vectors, its CNN's fingerprint)
    encoders.clear_cache(keep=("builtin",))


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's data dir: the default index is under tmp_path."""
    index = tmp_path / "default-index"
    monkeypatch.setenv("MMSEARCH_INDEX", str(index))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    # no hub: a closed loopback port refuses at once (the machine has no internet anyway), and an empty
    # cache, so every test sees what a user offline with nothing downloaded sees
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return index


def solid(path: Path, colour: str | tuple[int, int, int], size: tuple[int, int] = (64, 48), **save) -> Path:
    """Write a picture of one palette colour (a little noise so files differ by seed)."""
    rgb = PALETTE[colour] if isinstance(colour, str) else colour
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # same bytes in every run
    arr = np.clip(np.array(rgb)[None, None, :] + rng.integers(-8, 9, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, **save)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder: one photo per colour, two notes and a captioned photo."""
    root = tmp_path / "photos"
    for colour in COLOURS:
        solid(root / f"{colour}.jpg", colour)
    (root / "notes").mkdir()
    (root / "notes" / "red-note.txt").write_text("a note about a red car")
    (root / "notes" / "blue.md").write_text("# Sea\nthe blue sea and sky")
    solid(root / "trip" / "beach.png", (200, 180, 120))  # sand: no palette colour, so no ties
    (root / "trip" / "beach.txt").write_text("sand at the beach")
    return root


def set_mtime(path: Path, offset_s: float) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(offset_s * 1e9)))
