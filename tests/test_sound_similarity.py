"""Sound-to-sound search: a recording finds itself re-encoded, trimmed and quieter, among real sounds."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmsearch import Engine
from mmsearch.encoders import load_encoder
from mmsearch.modalities.audio_io import windows

_pygame = importlib.util.find_spec("pygame")
assert _pygame is not None and _pygame.submodule_search_locations, "pip install pygame-ce (test sounds)"
PYGAME = Path(_pygame.submodule_search_locations[0]) / "examples" / "data"
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
assert FREEDESKTOP.is_dir(), "apt-get install sound-theme-freedesktop (the README's set-up does)"
RATE = 22050


def distinct_sounds() -> list[Path]:
    """pygame's sounds (house_lo in six formats: one sound) and the theme's, without its links (aliases)."""
    found = sorted(PYGAME.glob("*.wav")) + sorted(PYGAME.glob("house_lo.*")) + sorted(FREEDESKTOP.glob("*.oga"))
    return [p for p in dict.fromkeys(found) if not os.path.islink(p)]


def load(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        return np.concatenate([s for _, s in windows(f, RATE)])


def altered(x: np.ndarray) -> np.ndarray:
    """10 % trimmed (5 % each end), half as loud, through Ogg Vorbis."""
    n = x.size
    buf = io.BytesIO()
    sf.write(buf, x[int(0.05 * n) : int(0.95 * n)] * 0.5, RATE, format="OGG", subtype="VORBIS")
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return y


def test_every_real_sound_finds_its_original_first_after_trim_volume_and_codec() -> None:
    paths = distinct_sounds()
    assert len(paths) >= 38  # pygame: 5 sounds + house_lo in 6 formats; the theme: 27 distinct files
    enc = load_encoder("soundsim")
    originals = [load(p) for p in paths]
    a = enc.encode_audio(originals)
    b = enc.encode_audio([altered(x) for x in originals])
    assert a.shape == (len(paths), enc.dim) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    stem = [p.name.split(".")[0] for p in paths]
    sims = b @ a.T
    wrong = [
        (paths[i].name, paths[int(sims[i].argmax())].name)
        for i in range(len(paths))
        if stem[int(sims[i].argmax())] != stem[i]
    ]
    assert wrong == []
    margins = [sims[i, i] - max(sims[i, j] for j in range(len(paths)) if stem[j] != stem[i]) for i in range(len(paths))]
    assert float(np.median(margins)) > 0.1
    # the builtin model's own sound vectors (words for sounds) cannot tell them apart: why this space exists
    builtin = load_encoder("builtin").encode_audio(originals)
    assert float(np.median((builtin @ builtin.T)[~np.eye(len(paths), dtype=bool)])) > float(np.median(a @ a.T))


@pytest.fixture(scope="module")
def sounds_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    lib, idx = tmp_path_factory.mktemp("sounds"), tmp_path_factory.mktemp("idx")
    for p in distinct_sounds()[:16]:  # pygame's, and a few of the theme's
        shutil.copy(p, lib / p.name)
    with Engine.open(idx, model="builtin", create=True) as eng:
        report = eng.index([lib])
        assert report.skipped == [] and report.added >= 15
    return lib, idx


def test_a_query_sound_finds_the_same_sound_first_and_dedupe_keeps_distinct_ones(
    sounds_index: tuple[Path, Path], tmp_path: Path
) -> None:
    lib, idx = sounds_index
    with Engine.open(idx) as eng:
        n = eng.store.count("audio")
        assert eng.store.count("audio.sound") == n
        # the case: house_lo.wav's other formats come before every other sound
        names = [Path(h.path).name for h in eng.search(audio=str(lib / "house_lo.wav"), k=n)]
        assert len(names) == n
        house = [name for name in names if name.startswith("house_lo.")]
        assert len(house) >= 5 and names[: len(house)] == house  # wav, flac, ogg, mp3, opus (not .wv)
        # a copy of car_door.wav, trimmed, quieter and re-encoded (not indexed) finds it first
        query = tmp_path / "slam.ogg"
        sf.write(query, altered(load(lib / "car_door.wav")), RATE, format="OGG", subtype="VORBIS")
        hits = eng.search(audio=str(query), k=3)
        assert Path(hits[0].path).name == "car_door.wav"
        assert hits[0].score - hits[1].score > 0.05
        # de-duplication compares sounds in the sound space: distinct sounds stay, copies of one go
        kept = eng.search(audio=str(lib / "boom.wav"), k=n, dedupe=True)
        names = [Path(h.path).name for h in kept]
        assert {"boom.wav", "car_door.wav", "punch.wav", "whiff.wav", "secosmic_lo.wav"} <= set(names)
        assert len(names) >= n - 5  # at most the five other formats of house_lo fold into one
