"""Synthetic captioned sounds the zero-shot model cannot solve: pitch x timbre x rhythm.

A caption names all three ("a high buzzing tone in fast beeps"). ``write_split`` holds out whole
(pitch, timbre) combinations, so the test split only has combinations never heard in training.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from synthetic import write_pairs

RATE = 22050
PITCHES = {"low": (110.0, 180.0), "middle": (400.0, 600.0), "high": (1500.0, 2200.0)}
TIMBRES = ("pure whistling", "buzzing", "hissing")
RHYTHMS = ("steady", "fast beeps", "slow pulses")


def synth(pitch: str, timbre: str, rhythm: str, rng: np.random.Generator, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(*PITCHES[pitch])
    phase = 2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)
    if timbre == "pure whistling":
        x = np.sin(phase)
    elif timbre == "buzzing":
        x = np.sign(np.sin(phase)) * 0.6 + 0.4 * ((phase / (2 * np.pi)) % 1.0 * 2 - 1)  # square + saw
    else:  # noise band-passed around f0 (FFT mask)
        noise = rng.standard_normal(t.size)
        spec = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(t.size, 1 / RATE)
        spec[np.abs(freqs - f0) > 0.25 * f0] = 0
        x = np.fft.irfft(spec, t.size)
        x /= np.abs(x).max() + 1e-9
    if rhythm == "fast beeps":
        rate = rng.uniform(6, 9)
        env = (np.sin(2 * np.pi * rate * t) > 0).astype(float)
    elif rhythm == "slow pulses":
        rate = rng.uniform(0.8, 1.3)
        env = 0.5 * (1 - np.cos(2 * np.pi * rate * t))
    else:
        env = np.ones_like(t)
    y = x * env * rng.uniform(0.3, 0.9) + rng.standard_normal(t.size) * 0.003
    return y.astype(np.float32)


def caption(pitch: str, timbre: str, rhythm: str) -> str:
    return f"a {pitch} {timbre} sound in {rhythm}" if rhythm != "steady" else f"a {pitch} {timbre} sound, steady"


def write_split(
    root: Path, per_combo: int = 6, held_pairs: int = 4, per_test_combo: int = 1, seed: int = 0
) -> tuple[Path, Path]:
    """Write clips + ``train.csv`` (seen combinations, ``per_combo`` clips each) and ``test.csv``
    (``per_test_combo`` clips per combination of the held-out pitch-timbre pairs, every rhythm)."""
    rng = np.random.default_rng(seed)
    pairs = list(itertools.product(PITCHES, TIMBRES))
    random.Random(seed).shuffle(pairs)
    held = set(pairs[:held_pairs])
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        rows = []
        for combo in itertools.product(PITCHES, TIMBRES, RHYTHMS):
            if ((combo[0], combo[1]) in held) != (split == "test"):
                continue
            for k in range(per_combo if split == "train" else per_test_combo):
                name = f"{split}-{'-'.join(combo).replace(' ', '_')}-{k}.wav"
                sf.write(root / name, synth(*combo, rng), RATE, subtype="PCM_16")
                rows.append((name, caption(*combo)))
        files[split] = write_pairs(root / f"{split}.csv", rows)
    return files["train"], files["test"]
