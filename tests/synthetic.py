"""Synthetic captioned scenes the zero-shot model cannot solve: colour x shape x size x side.

A caption names all four ("a small red circle on the left"). ``write_split`` holds out whole
(colour, shape) combinations, so the test split shows combinations never seen in training.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 60, 220),
    "yellow": (235, 210, 30),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
SIDES = ("left", "right")


def render(colour: str, shape: str, size: str, side: str, rng: np.random.Generator, px: int = 160) -> Image.Image:
    im = Image.new("RGB", (px, px), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(im)
    r = rng.uniform(12, 18) if size == "small" else rng.uniform(30, 38)
    cx = rng.uniform(px * 0.2, px * 0.35) if side == "left" else rng.uniform(px * 0.65, px * 0.8)
    cy = rng.uniform(px * 0.3, px * 0.7)
    fill = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOURS[colour])
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        points = []
        for k in range(10):
            angle, radius = np.pi / 2 + k * np.pi / 5, r if k % 2 == 0 else r * 0.45
            points.append((cx + radius * np.cos(angle), cy - radius * np.sin(angle)))
        draw.polygon(points, fill=fill)
    return im


def caption(colour: str, shape: str, size: str, side: str) -> str:
    return f"a {size} {colour} {shape} on the {side}"


def write_pairs(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A pairs file as `mmsearch eval`/`train` read it: header ``filepath,caption``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["filepath", "caption"])
        writer.writerows(rows)
    return path


def write_split(root: Path, per_combo: int = 5, held_pairs: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """Write images + ``train.csv`` (seen combinations, ``per_combo`` images each) and ``test.csv``
    (one image per combination of the held-out colour-shape pairs)."""
    rng = np.random.default_rng(seed)
    pairs = list(itertools.product(COLOURS, SHAPES))
    random.Random(seed).shuffle(pairs)
    held = set(pairs[:held_pairs])
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        rows = []
        for combo in itertools.product(COLOURS, SHAPES, SIZES, SIDES):
            if ((combo[0], combo[1]) in held) != (split == "test"):
                continue
            for k in range(per_combo if split == "train" else 1):
                name = f"{split}-{'-'.join(combo)}-{k}.png"
                render(*combo, rng).save(root / name)
                rows.append((name, caption(*combo)))
        files[split] = write_pairs(root / f"{split}.csv", rows)
    return files["train"], files["test"]
