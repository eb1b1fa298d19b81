"""When does approximate search pay off? Flat (exact) vs the IVF recipe, per collection size.

Prints, for each size: single-query latency of Flat and of IVF (median of many queries, one
query at a time as `mmsearch query` does), their ratio, IVF recall@10 against Flat, and the IVF
build time. Data: clustered synthetic unit vectors (tests/test_recipes.py's generator).

    python bench/bench_recipes.py [--dim 512] [--sizes 25000,50000,100000,200000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_recipes import clustered  # noqa: E402

from mmsearch.vector_index import VectorIndex, load_recipes  # noqa: E402


def single_query_ms(index: VectorIndex, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], 10)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sizes", default="25000,50000,100000,200000")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    import faiss

    recipes = load_recipes()
    flat_r, ivf_r = recipes["flat"], recipes["ivf"]
    print(
        f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}, dim {args.dim}, "
        f"ivf nprobe {ivf_r.params['nprobe']}"
    )
    print(f"{'n':>8} {'flat ms':>8} {'ivf ms':>8} {'flat/ivf':>8} {'recall@10':>9} {'ivf build s':>11}")
    for n in (int(s) for s in args.sizes.split(",")):
        data = clustered(n, args.dim, seed=0)
        queries = clustered(args.queries, args.dim, seed=1)
        ids = np.arange(n, dtype=np.int64)
        flat = VectorIndex.build(args.dim, flat_r, [(ids, data)], n)
        t = time.perf_counter()
        rng = np.random.default_rng(2)
        train = data[rng.choice(n, size=min(n, ivf_r.nlist(n) * 64), replace=False)]
        ivf = VectorIndex.build(args.dim, ivf_r, [(ids, data)], n, train)
        build_s = time.perf_counter() - t
        _, want = flat.search(queries, 10)
        _, got = ivf.search(queries, 10)
        recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got.tolist(), want.tolist(), strict=True)])
        f_ms, i_ms = single_query_ms(flat, queries), single_query_ms(ivf, queries)
        print(f"{n:>8} {f_ms:>8.2f} {i_ms:>8.2f} {f_ms / i_ms:>8.1f} {recall:>9.3f} {build_s:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
