"""The large-index recipe (indexes/ivf-pq.toml) over 10M x 384 vectors, on one machine.

Vectors are generated in chunks (never all in memory) by bench_search's ``EmbedLike`` (topics and
sub-topics with a power-law spectrum, calibrated on the recall FAISS measured for real embeddings).
Each chunk is appended to a float32 file on disk, the stand-in for the exact copy SQLite keeps (read
back memory-mapped, as SQLite's pages would be), and added to the index
through mmsearch's own ``VectorIndex.build`` (trained on a sample first). Then:

- build time (generation excluded), bytes per vector of the FAISS file on disk and of the index in RAM
  (the writer's resident copy; a reader maps the file and touches only the cells it scans);
- recall@10 of the engine's answer (the codes' k_factor x 10 candidates re-scored exactly from the float
  file) against exact search over every vector (streamed), on a sample of queries;
- p50/p99 latency of single queries, one thread, FAISS and the exact re-rank separately and together.

    python -m bench.bench_large [--n 10000000] [--dim 384] [--queries 200] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import record
from bench.bench_search import EmbedLike

CHUNK = 250_000
# candidates asked of FAISS for 10 hits, times the recipe's k_factor (4): 160 rows re-scored exactly. The
# engine asks max(50, 4 x k) = 50 (200 rows), so its recall is at least this.
FETCH = 40


def loaded_rss(path: Path) -> int:
    """Resident bytes a fresh process gains by reading the FAISS file whole (what an index run holds)."""
    import subprocess
    import sys

    code = (
        "import faiss, sys\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "before = rss(); index = faiss.read_index(sys.argv[1]); print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact inner-product top 10 over every vector, a chunk at a time."""
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    best_i = np.full((len(queries), 10), -1, np.int64)
    for start in range(0, len(vectors), CHUNK):
        block = np.asarray(vectors[start : start + CHUNK])
        s = queries @ block.T
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        s_top = np.take_along_axis(s, top, 1)
        all_s = np.concatenate([best_s, s_top], 1)
        all_i = np.concatenate([best_i, top + start], 1)
        keep = np.argsort(-all_s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1)
    return best_i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobes", type=lambda v: [int(x) for x in v.split(",")], default=[32, 128], help="also measure")
    ap.add_argument(
        "--dir", type=Path, default=None, help="where the float file and the index go (default: a temp dir)"
    )
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    import faiss

    from mmsearch import threads
    from mmsearch.vector_index import VectorIndex, load_recipes

    threads.wide()
    recipe = load_recipes()["ivf-pq"]
    n, dim = args.n, args.dim
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-large-", dir=args.dir))
    try:
        gen = EmbedLike(dim)
        floats = work / "vectors.f32"
        t = time.perf_counter()
        with open(floats, "wb") as f:
            for i, start in enumerate(range(0, n, CHUNK)):
                f.write(gen.sample(min(CHUNK, n - start), seed=1000 + i).tobytes())
        gen_s = time.perf_counter() - t
        vectors = np.memmap(floats, dtype=np.float32, mode="r", shape=(n, dim))
        print(f"{n:,} x {dim} generated in {gen_s:.0f} s ({floats.stat().st_size / 1e9:.1f} GB float32 on disk)")

        t = time.perf_counter()
        want = min(n, recipe.nlist(n) * int(recipe.params.get("train_per_list", 64)))
        sample = np.sort(np.random.default_rng(0).choice(n, size=want, replace=False))
        train = np.asarray(vectors[sample])
        ids = np.arange(n, dtype=np.int64)

        def chunks():
            for start in range(0, n, CHUNK):
                yield ids[start : start + CHUNK], np.asarray(vectors[start : start + CHUNK])

        index = VectorIndex.build(dim, recipe, chunks(), n, train)
        del train
        build_s = time.perf_counter() - t
        path = work / "space.faiss"
        index.save(path, 1, "bench")
        disk = path.stat().st_size
        del index
        ram = loaded_rss(path)
        print(f"built {recipe.factory_for(n, dim)} in {build_s:.0f} s; file {disk / 1e9:.2f} GB", flush=True)

        q = gen.sample(args.queries, seed=1)  # bench_search's queries: drawn like the collection
        t = time.perf_counter()
        truth = exact_top10(vectors, q)
        exact_s = time.perf_counter() - t

        mapped, _ = VectorIndex.load(path, {recipe.name: recipe}, "bench", mapped=True)
        threads.narrow()
        ivf = faiss.extract_index_ivf(mapped.index)
        hnsw = faiss.downcast_index(ivf.quantizer).hnsw
        shipped = int(recipe.params["nprobe"])
        rows = {}
        for nprobe in sorted({shipped, *args.nprobes}):
            ivf.nprobe, hnsw.efSearch = nprobe, max(2 * nprobe, int(recipe.params.get("quantizer_ef", 128)))
            faiss_ms, rerank_ms, total_ms, found, rough = [], [], [], 0, 0
            for qi in range(len(q)):
                t0 = time.perf_counter()
                _, cand = mapped.search(q[qi : qi + 1], FETCH)
                t1 = time.perf_counter()
                row = np.sort(cand[0][cand[0] >= 0])
                scores = np.asarray(vectors[row]) @ q[qi]  # the engine's exact re-score (from SQLite)
                top = row[np.argsort(-scores)[:10]]
                t2 = time.perf_counter()
                faiss_ms.append((t1 - t0) * 1e3)
                rerank_ms.append((t2 - t1) * 1e3)
                total_ms.append((t2 - t0) * 1e3)
                found += len(set(top.tolist()) & set(truth[qi].tolist()))
                rough += len(set(cand[0][:10].tolist()) & set(truth[qi].tolist()))
            rows[nprobe] = (found / truth.size, rough / truth.size, faiss_ms, rerank_ms, total_ms)
            print(f"nprobe {nprobe}: recall@10 {found / truth.size:.3f}, p50 {statistics.median(total_ms):.2f} ms")
        recall, rough_recall, faiss_ms, rerank_ms, total_ms = rows[shipped]

        def pct(xs: list[float], p: float) -> float:
            return float(np.percentile(xs, p))

        sweep = [
            f"  nprobe {p:>4}: recall@10 {r[0]:.3f}, p50 {statistics.median(r[4]):.2f} ms, p99 {pct(r[4], 99):.2f} ms"
            for p, r in rows.items()
        ]
        lines = [
            f"recipe {recipe.name}: {recipe.factory_for(n, dim)}, nprobe {recipe.params['nprobe']}, "
            f"k_factor {recipe.k_factor}, faiss {faiss.__version__}, {len(os.sched_getaffinity(0))} cores",
            f"vectors           {n:,} x {dim} (generated in chunks of {CHUNK:,}; {gen_s:.0f} s, not counted)",
            f"build             {build_s:.0f} s (train on {want:,} + add, {threads.budget()} threads)",
            f"FAISS file        {disk / n:.1f} bytes/vector on disk ({disk / 1e9:.2f} GB)",
            f"FAISS in RAM      {ram / n:.1f} bytes/vector loaded whole (an index run); queries map the file",
            f"exact copy        {4 * dim} bytes/vector (float32, SQLite's; read for the re-rank only)",
            f"recall@10         {recall:.3f} with the exact re-rank of {FETCH * recipe.k_factor} candidates "
            f"({rough_recall:.3f} from the codes alone); {len(q)} queries vs exact search ({exact_s:.0f} s)",
            f"latency, 1 thread p50 {statistics.median(total_ms):.2f} ms, p99 {pct(total_ms, 99):.2f} ms "
            f"(FAISS p50 {statistics.median(faiss_ms):.2f} / p99 {pct(faiss_ms, 99):.2f}; "
            f"re-rank p50 {statistics.median(rerank_ms):.2f} / p99 {pct(rerank_ms, 99):.2f})",
        ]
        lines += ["nprobe sweep (same index, exact re-rank):", *sweep]
        table = "\n".join(lines)
        print("\n" + table)
        record(
            "large", "Large index: ivf-pq at 10M x 384 (issue 20)", f"```\n{table}\n```\n", enabled=not args.no_record
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
