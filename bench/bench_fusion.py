"""Query latency with multi-vector fusion vs single-vector search, on one index of N picture items.

    python bench/bench_fusion.py [--items 100000] [--dim 384] [--queries 200]

Each item owns 3 vectors (its picture, a caption, its file-name words), clustered synthetic data.
Baseline, same index and process: FAISS search of the pictures' own vectors + reading the hits'
rows (what a single-vector engine does). Fusion: `Engine.search` end to end (candidates from the
3 FAISS indexes, exact re-scoring of every candidate's 3 vectors from SQLite, calibration, fusion),
also with a path filter. Prints p50/p99 per query and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.encoders.base import EncoderBase


class BenchEncoder(EncoderBase):
    """Text -> a fixed random unit vector per text (the benchmark times search, not the model)."""

    modalities = frozenset({"text", "image"})

    def __init__(self, dim: int) -> None:
        self.name, self.dim, self.fingerprint = "bench", dim, "bench-v1"

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray, noise: float) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def percentiles(ts: list[float]) -> tuple[float, float]:
    a = np.array(ts) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    from mmsearch import encoders
    from mmsearch.engine import Engine
    from mmsearch.search import Query
    from mmsearch.store import ItemRecord

    enc = BenchEncoder(args.dim)
    encoders.register("bench", lambda spec: enc)  # type: ignore[arg-type,return-value]
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, args.dim))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with Engine.open(Path(tmp) / "idx", model="bench", create=True) as eng:
            eng.encoder  # noqa: B018 - records the model
            for start in range(0, args.items, 5000):
                n = min(5000, args.items - start)
                own, cap, name = (clustered(rng, n, centres, 0.6) for _ in range(3))
                records = [
                    ItemRecord(
                        path=f"/photos/{'a' if (start + i) % 2 else 'b'}/img{start + i:07d}.jpg",
                        modality="image",
                        size=1,
                        mtime_ns=1,
                        content_hash=f"h{start + i}",
                        vector=own[i],
                        extra_vectors={"image.caption": cap[i], "image.name": name[i]},
                    )
                    for i in range(n)
                ]
                eng.store.write_batch(records, {})
        build = time.perf_counter() - t
        with Engine.open(Path(tmp) / "idx") as eng:
            for space in ("image", "image.caption", "image.name"):
                eng.spaces.get(space)  # build the FAISS indexes from SQLite once
            eng.spaces.save()
            texts = [f"query {i}" for i in range(args.queries)]
            qv = enc.encode_text(texts)
            base, fused, filtered = [], [], []
            eng.search(texts[0])  # warm caches (calibration samples)
            for i, text in enumerate(texts):
                t = time.perf_counter()
                _, ids = eng.spaces.search("image", qv[i : i + 1], 10)
                eng.store.get_items([int(x) for x in ids[0]])
                base.append(time.perf_counter() - t)
                t = time.perf_counter()
                hits = eng.search(Query.parse(text, k=10))
                fused.append(time.perf_counter() - t)
                assert len(hits) == 10
                t = time.perf_counter()
                eng.search(Query.parse(text, k=10, path="*/a/*"))
                filtered.append(time.perf_counter() - t)
    b50, b99 = percentiles(base)
    f50, f99 = percentiles(fused)
    p50, p99 = percentiles(filtered)
    print(f"{args.items} items x 3 vectors, dim {args.dim}, {args.queries} queries; index written in {build:.0f} s")
    print(f"single-vector search (FAISS Flat + rows):   p50 {b50:.1f} ms  p99 {b99:.1f} ms")
    print(f"fused search, 3 vectors per item (sum):     p50 {f50:.1f} ms  p99 {f99:.1f} ms  ratio {f50 / b50:.1f}x")
    print(f"fused + --path filter (half the items):     p50 {p50:.1f} ms  p99 {p99:.1f} ms  ratio {p50 / b50:.1f}x")


if __name__ == "__main__":
    main()
