"""Encoding speed of the offline `builtin` model on this machine's CPU.

    python bench/bench_builtin.py [--images 64] [--texts 512] [--batch 32]

Prints images/s (decode excluded: pictures are already in memory, as in the ingest pipeline where
decoding runs in other threads) and texts/s, with the torch thread count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import torch
    from skimage import data

    from mmsearch.encoders import load_encoder

    t = time.perf_counter()
    enc = load_encoder("builtin")
    load_s = time.perf_counter() - t
    photos = [Image.fromarray(f()) for f in (data.chelsea, data.coffee, data.astronaut, data.rocket)]
    images = [photos[i % len(photos)].resize((512, 384)) for i in range(args.images)]
    words = "a photo of a dog cat beach sunset mountain city car tree flower river".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(6)) for i in range(args.texts)]
    enc.encode_image(images[: args.batch])  # warm-up
    enc.encode_text(texts[: args.batch])
    t = time.perf_counter()
    for s in range(0, len(images), args.batch):
        enc.encode_image(images[s : s + args.batch])
    img_s = len(images) / (time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(0, len(texts), args.batch):
        enc.encode_text(texts[s : s + args.batch])
    txt_s = len(texts) / (time.perf_counter() - t)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}")
    print(f"load (first process, class table cached): {load_s:.1f} s")
    print(f"images/s: {img_s:.1f}   texts/s: {txt_s:.1f}   (ratio texts/images {txt_s / img_s:.1f})")
    assert np.isfinite(img_s) and np.isfinite(txt_s)


if __name__ == "__main__":
    main()
