"""Search at 100k and 1M vectors: exact brute force vs the FAISS recipe mmsearch picks at that size.

    python -m bench.bench_search [--sizes 100000,1000000] [--dims 384,512] [--queries 1000]
    python bench/run.py search --sizes 200000 --dims 512 --no-sweep --no-record

For each size n and dimension: exact ground truth for every query (one batched exact search);
exact brute force one query at a time, with numpy (``vecs @ q`` + argpartition, the issue's
baseline) and with FAISS Flat; then the recipe ``choose_recipe(n)`` picks, built the way
``Engine._rebuild`` builds it (IVF training sample of ``nlist * train_per_list`` vectors drawn with
``default_rng(0)``, vectors added in 50k chunks): recall@10 against exact, single-query p50/p99
(``VectorIndex.search``, one query per call as ``mmsearch query`` sends them), batched QPS (every
query in one call), build time including training, index bytes (as ``faiss.write_index`` writes it) and RSS
growth, and its speed-up over numpy brute force (p50 / p50).

Brute force costs ~0.1 s per query at 1M x 512 on 2 cores, so its single-query latency is timed
on the first ``--bf-queries`` queries (100; the flat recipe up to 200k is timed on every query);
recall always uses every query, against ground truth from one batched exact search. Before each
timing phase the script pauses 1 s and warms up (see ``warm``): on 2 cores, thread pools left
spinning by the previous phase otherwise add scheduler slices to the timed queries.

The sweep (``--sweep-sizes``, default 100k and 1M, at ``--sweep-dims``, default 512) justifies
the recipe's parameters: IVF with ``nlist = c * sqrt(n)`` for c in ``--sweep-nlist-per-sqrt``
(the ``nlist_per_sqrt`` of ``indexes/ivf.toml``; the recipe's own index is reused) x nprobe, the
same quantizer with SQ8 codes (``ivf-sq8``'s structure), and HNSW32 x efSearch up to
``--hnsw-max-n`` (HNSW cannot ``remove_ids``, which mmsearch's incremental updates need, so it is
shown for comparison only). Each sweep point: recall@10 over every query, p50 over the first
``--sweep-timing-queries``; ``*`` marks the points that meet the target (recall@10 >= 0.95 at
>= 25x numpy brute force). ``--no-sweep`` skips it. Default run: ~9 min on a quiet 2-core machine, most of it
k-means at 1M.

Data (``--data``): ``embed`` (default), unit vectors shaped like real embeddings: 300 topics of
uneven popularity x 32 sub-topics, Gaussian at every level with a power-law spectrum (most of the
variance in a few dozen directions, none empty), overlapping; queries are fresh draws from the same
distribution (see ``EmbedLike``).
``tests``: ``tests/test_recipes.py``'s ``clustered`` (2,000 centres, noise filling every
dimension; queries from other centres), harder for IVF than real embeddings because nothing but
noise tells neighbours inside a cluster apart and queries fall between clusters.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench._report import record
from mmsearch.vector_index import Recipe, VectorIndex, choose_recipe, load_recipes

K = 10
CHUNK = 50_000  # Store.iter_vectors' batch: the chunks Engine._rebuild adds
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 25.0
NPROBES = (16, 24, 32, 48, 64, 96, 128)
EF_SEARCH = (16, 32, 64, 128, 256)
SMALL = 200_000  # up to here brute force is cheap enough to time on every query, and 8*sqrt(n) cells to train


# -- data ----------------------------------------------------------------------------------------
def _normalize(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class EmbedLike:
    """Unit vectors shaped like real embeddings (see the module docstring).

    300 topics x 32 sub-topics; topic popularity log-normal. Every level is a Gaussian with the
    same power-law spectrum (variance of the i-th axis ~ 1/i, in a random rotation): ~70 % of the
    variance in 64 of 512 dimensions, yet no dimension is empty. Sub-topic offsets 0.6 and items
    1.5 times a topic's scale, so neighbourhoods overlap cell boundaries. The item spread was set so
    that IVF4000,Flat at nprobe 48 on 1M x 512 lands near the issue's measured 0.968 (0.96 with a
    small training sample, 0.98 with the recipe's); 1.2 gives 0.99, 1.8 gives 0.92.
    """

    def __init__(self, dim: int, topics: int = 300, subs: int = 32, sub_scale: float = 0.6, item: float = 1.5) -> None:
        rng = np.random.default_rng(1234)
        self.scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
        self.basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        top = rng.standard_normal((topics, dim)).astype(np.float32) * self.scale
        sub = sub_scale * rng.standard_normal((topics, subs, dim)).astype(np.float32) * self.scale
        self.centres = (top[:, None, :] + sub).reshape(-1, dim)
        w = np.repeat(rng.lognormal(0.0, 1.0, topics), subs)
        self.weights = w / w.sum()
        self.item = item

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        dim = len(self.scale)
        out = np.empty((n, dim), np.float32)
        for s in range(0, n, 100_000):
            m = min(100_000, n - s)
            k = rng.choice(len(self.centres), size=m, p=self.weights)
            z = self.centres[k] + self.item * rng.standard_normal((m, dim), dtype=np.float32) * self.scale
            out[s : s + m] = z @ self.basis
        return _normalize(out)


def tests_clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """``tests/test_recipes.py``'s ``clustered`` (same values), generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2_000, dim)).astype(np.float32)
    which = rng.integers(0, len(centres), n)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        out[s : s + m] = centres[which[s : s + m]] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
    return _normalize(out)


def make_data(kind: str, n: int, dim: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "embed":
        gen = EmbedLike(dim)
        return gen.sample(n, seed=0), gen.sample(nq, seed=1)
    return tests_clustered(n, dim, seed=0), tests_clustered(nq, dim, seed=1)


# -- measurement ---------------------------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def index_mb(index: Any) -> float:
    """Bytes ``faiss.serialize_index`` would produce, counted as written (a copy would double RSS)."""
    import faiss

    size = 0

    def count(chunk: bytes) -> int:
        nonlocal size
        size += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer  # flushes
    return size / 2**20


def recall(got: np.ndarray, want: np.ndarray) -> float:
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.tolist(), want.tolist(), strict=True))
    return hits / want.size


def pct(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def warm(fn: Any, queries: np.ndarray, seconds: float = 0.3) -> None:
    """Settle, then call ``fn`` on single queries for a while. On 2 cores, thread pools left spinning
    by the previous phase (FAISS's OpenMP and BLAS, numpy's BLAS) otherwise bill whole scheduler
    slices (~24 ms) to the timed queries; a pause lets them go to sleep."""
    time.sleep(1.0)
    t = time.perf_counter()
    i = 0
    while i < 3 or time.perf_counter() - t < seconds:
        fn(queries[i % len(queries)][None, :])
        i += 1


def single_ms(vi: VectorIndex, queries: np.ndarray) -> list[float]:
    """Latency of ``VectorIndex.search`` with one query per call, in ms."""
    warm(lambda q: vi.search(q, K), queries)
    out = []
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t = time.perf_counter()
        vi.search(q, K)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def numpy_search(data: np.ndarray, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = data @ q
    top = np.argpartition(scores, -K)[-K:]
    return ids[top[np.argsort(-scores[top])]]


def numpy_ms(data: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    warm(lambda q: numpy_search(data, ids, q[0]), queries)
    out, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(numpy_search(data, ids, q))
        out.append((time.perf_counter() - t) * 1e3)
    return out, np.stack(found)


def batched(vi: VectorIndex, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """(ids found, QPS) of one search call over every query."""
    vi.search(queries[:8], K)
    t = time.perf_counter()
    _, found = vi.search(queries, K)
    return found, len(queries) / (time.perf_counter() - t)


def chunks(ids: np.ndarray, data: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for s in range(0, len(ids), CHUNK):
        yield ids[s : s + CHUNK], data[s : s + CHUNK]


def build(recipe: Recipe, ids: np.ndarray, data: np.ndarray) -> tuple[VectorIndex, float, float]:
    """(index, build seconds incl. training, RSS growth MB), the way ``Engine._rebuild`` builds it."""
    gc.collect()
    rss0, t = rss_mb(), time.perf_counter()
    n, dim = data.shape
    train = None
    if recipe.is_ivf:
        want = min(n, recipe.nlist(n) * int(recipe.params.get("train_per_list", 64)))
        pick = np.random.default_rng(0).choice(ids, size=want, replace=False)
        train = data[np.isin(ids, pick)]
    vi = VectorIndex.build(dim, recipe, chunks(ids, data), n, train)
    secs = time.perf_counter() - t
    del train
    gc.collect()
    return vi, secs, rss_mb() - rss0


def with_params(recipe: Recipe, **params: Any) -> Recipe:
    return dataclasses.replace(recipe, params={**recipe.params, **params})


def probe(vi: VectorIndex, recipe: Recipe) -> VectorIndex:
    """The same FAISS index searched with another recipe's parameters (nprobe)."""
    return VectorIndex(vi.dim, recipe, vi.index)


# -- report --------------------------------------------------------------------------------------
HEAD = (
    f"{'n':>8} {'dim':>4}  {'method':<34} {'recall@10':>9} {'p50 ms':>8} {'p99 ms':>8} {'batch QPS':>9} "
    f"{'build s':>7} {'index MB':>8} {'RSS +MB':>7} {'speedup':>7}"
)


def row(n: int, dim: int, method: str, r: float, ms: list[float], qps: float, **extra: float | None) -> str:
    p50, p99 = pct(ms)
    cells = []
    for key, fmt in (("build", "7.1f"), ("mb", "8.0f"), ("rss", "7.0f"), ("speedup", "6.1f")):
        v = extra.get(key)
        cells.append(
            "-".rjust(int(fmt.split(".")[0])) if v is None else format(v, fmt) + ("x" if key == "speedup" else "")
        )
    return f"{n:>8} {dim:>4}  {method:<34} {r:>9.3f} {p50:>8.2f} {p99:>8.2f} {qps:>9.0f} " + " ".join(cells)


class Out:
    """Print as it goes; keep the lines for docs/benchmarks.md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


# -- the benchmark -------------------------------------------------------------------------------
def main_table(args: argparse.Namespace, out: Out, n: int, dim: int, recipes: dict[str, Recipe], sweep: bool) -> None:
    t0 = time.perf_counter()
    data, queries = make_data(args.data, n, dim, args.queries)
    ids = np.arange(1, n + 1, dtype=np.int64)  # SQLite ids: not positions
    gen_s = time.perf_counter() - t0

    exact, exact_s, exact_rss = build(recipes["flat"], ids, data)
    truth, exact_qps = batched(exact, queries)
    bf_q = queries[: args.bf_queries]
    np_ms, np_found = numpy_ms(data, ids, bf_q)
    flat_ms = single_ms(exact, bf_q)
    np_p50 = pct(np_ms)[0]
    out(f"{n:>8} {dim:>4}  (data {gen_s:.0f} s; brute-force single-query timings over {len(bf_q)} queries)")
    out(row(n, dim, "brute force numpy (exact)", recall(np_found, truth[: len(bf_q)]), np_ms, 0.0))
    mb = index_mb(exact.index)
    flat_x = np_p50 / pct(flat_ms)[0]
    label = "brute force FAISS Flat (exact)"
    out(row(n, dim, label, 1.0, flat_ms, exact_qps, build=exact_s, mb=mb, rss=exact_rss, speedup=flat_x))

    recipe = choose_recipe(n, recipes)
    if recipe.name == "flat":
        vi, build_s, rss = exact, exact_s, exact_rss
        label = f"recipe flat: {recipe.factory}"
    else:
        del exact
        gc.collect()
        vi, build_s, rss = build(recipe, ids, data)
        label = f"recipe {recipe.name}: {recipe.factory_for(n)} np{recipe.params.get('nprobe', 16)}"
    found, qps = batched(vi, queries)
    ms = single_ms(vi, queries if recipe.is_ivf or n <= SMALL else bf_q)
    speed = np_p50 / pct(ms)[0]
    mb = index_mb(vi.index)
    r = recall(found, truth)
    out(row(n, dim, label, r, ms, qps, build=build_s, mb=mb, rss=rss, speedup=speed))
    if n >= 1_000_000:  # the target is set at 1M
        verdict = "met" if r >= TARGET_RECALL and speed >= TARGET_SPEEDUP else "missed"
        out(f"{'':>14}target recall@10 >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x numpy brute force: {verdict}")
    if sweep:
        run_sweep(args, out, data, ids, queries, truth, np_p50, recipes, vi if recipe.name == "ivf" else None)


def sweep_row(
    label: str, r: float, ms: list[float], np_p50: float, build_s: float | None = None, best: list | None = None
) -> str:
    p50, p99 = pct(ms)
    speed = np_p50 / p50
    ok = "*" if r >= TARGET_RECALL and speed >= TARGET_SPEEDUP else " "
    if best is not None and r >= TARGET_RECALL:
        best.append((p50, label, r, speed))
    b = f"{build_s:7.1f}" if build_s is not None else " " * 7
    return f"    {label:<30} {b} {r:>9.3f} {p50:>8.2f} {p99:>8.2f} {speed:>7.1f}x {ok}"


def run_sweep(
    args: argparse.Namespace,
    out: Out,
    data: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    np_p50: float,
    recipes: dict[str, Recipe],
    built: VectorIndex | None,
) -> None:
    import faiss

    n, dim = data.shape
    tq = queries[: args.sweep_timing_queries]
    out(
        f"  sweep at n={n} dim={dim}: recall@10 over {len(queries)} queries, p50/p99 over {len(tq)}, "
        f"speed-up vs numpy brute force p50 {np_p50:.1f} ms; * = recall >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x"
    )
    out(f"    {'index':<30} {'build s':>7} {'recall@10':>9} {'p50 ms':>8} {'p99 ms':>8} {'speedup':>8}")
    base = recipes["ivf"]
    best: list[tuple[float, str, float, float]] = []  # IVF,Flat points with recall >= target
    keep = built  # the index at the recipe's own nlist: SQ8 below reuses its cells
    per_sqrt = args.sweep_nlist_per_sqrt or ("1,2,4,8" if n <= SMALL else "1,2,4")
    for c in (float(x) for x in per_sqrt.split(",")):
        r = with_params(base, nlist_per_sqrt=c, nlist_min=1, nlist_max=1 << 20)
        nlist = r.nlist(n)
        if built is not None and built.recipe.nlist(n) == nlist:
            vi, build_s = built, None
        else:
            vi, build_s, _ = build(r, ids, data)
        for i, nprobe in enumerate(NPROBES):
            v = probe(vi, with_params(r, nprobe=nprobe))
            found, _ = batched(v, queries)
            label = f"IVF{nlist},Flat np{nprobe}"
            out(sweep_row(label, recall(found, truth), single_ms(v, tq), np_p50, build_s if i == 0 else None, best))
        if keep is None and nlist == base.nlist(n):
            keep = vi
        del vi
        gc.collect()
    if best:
        p50, label, r, speed = min(best)
        out(f"    fastest IVF,Flat with recall@10 >= {TARGET_RECALL}: {label}, {r:.3f}, {p50:.2f} ms, {speed:.1f}x")
    if keep is not None and args.sq8:
        # ivf-sq8's structure on the same cells: 8-bit codes, a quarter of the bytes
        sq = recipes["ivf-sq8"]
        nlist = keep.recipe.nlist(n)
        t = time.perf_counter()
        index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(faiss.extract_index_ivf(keep.index).quantizer.reconstruct_n(0, nlist))
        want = min(n, nlist * int(sq.params.get("train_per_list", 64)))
        pick = np.random.default_rng(0).choice(ids, size=want, replace=False)
        index.train(data[np.isin(ids, pick)])  # the quantizer is trained: this trains the SQ8 codec only
        vi = VectorIndex(dim, sq, index)
        for ci, cv in chunks(ids, data):
            vi.add(ci, cv)
        build_s = time.perf_counter() - t
        for i, nprobe in enumerate(NPROBES):
            v = probe(vi, with_params(sq, nprobe=nprobe))
            found, _ = batched(v, queries)
            label = f"IVF{nlist},SQ8 np{nprobe}"
            out(sweep_row(label, recall(found, truth), single_ms(v, tq), np_p50, build_s if i == 0 else None))
        out(f"    (IVF{nlist},SQ8: {index_mb(vi.index):.0f} MB, same cells; build = SQ8 training + adds)")
        del vi, index
        gc.collect()
    if keep is not None and args.pq:
        # ivf-pq's codes on the same cells: 4-bit fast-scan PQ, k_factor x 40 = 160 candidates re-scored exactly
        # (in mmsearch from SQLite's float32 copy; here from the array), the timing includes the re-score
        pq = recipes["ivf-pq"]
        nlist, m = keep.recipe.nlist(n), pq.pq_m(dim)
        t = time.perf_counter()
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).quantizer.add(
            faiss.extract_index_ivf(keep.index).quantizer.reconstruct_n(0, nlist)
        )
        pick = np.random.default_rng(0).choice(ids, size=min(n, nlist * 64), replace=False)
        index.train(data[np.isin(ids, pick)])
        vi = VectorIndex(dim, pq, index)
        for ci, cv in chunks(ids, data):
            vi.add(ci, cv)
        build_s = time.perf_counter() - t
        order = np.argsort(ids)

        def reranked(v: VectorIndex, qs: np.ndarray) -> np.ndarray:
            _, cand = v.search(qs, 40)
            out_ids = np.empty((len(qs), K), np.int64)
            for qi, row in enumerate(cand):
                row = row[row >= 0]
                rows = order[np.searchsorted(ids, row, sorter=order)]
                out_ids[qi] = row[np.argsort(-(data[rows] @ qs[qi]))[:K]]
            return out_ids

        for i, nprobe in enumerate(NPROBES):
            v = probe(vi, with_params(pq, nprobe=nprobe))
            found = reranked(v, queries)
            reranked(v, tq[:8])
            ms = []
            for j in range(len(tq)):
                t = time.perf_counter()
                reranked(v, tq[j : j + 1])
                ms.append((time.perf_counter() - t) * 1e3)
            label = f"IVF{nlist},PQ{m}x4fs+rerank{40 * pq.k_factor} np{nprobe}"
            out(sweep_row(label, recall(found, truth), ms, np_p50, build_s if i == 0 else None))
        out(
            f"    (IVF{nlist},PQ{m}x4fs: {index_mb(vi.index):.0f} MB, same cells; re-rank reads {K * pq.k_factor} rows)"
        )
        del vi, index
    del keep
    gc.collect()
    if n <= args.hnsw_max_n:
        t = time.perf_counter()
        h = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        for _, cv in chunks(ids, data):
            h.add(cv)
        build_s = time.perf_counter() - t
        for i, ef in enumerate(EF_SEARCH):
            h.hnsw.efSearch = ef
            warm(lambda q: h.search(q, K), tq)  # noqa: B023 - called right here
            _, pos = h.search(queries, K)
            ms = []
            for j in range(len(tq)):
                t = time.perf_counter()
                h.search(tq[j : j + 1], K)
                ms.append((time.perf_counter() - t) * 1e3)
            out(sweep_row(f"HNSW32 ef{ef}", recall(ids[pos], truth), ms, np_p50, build_s if i == 0 else None))
        mb = index_mb(h)
        out(f"    (HNSW32: {mb:.0f} MB; no remove_ids, so mmsearch cannot update it incrementally)")
        del h
        gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dims", default="384,512")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--bf-queries", type=int, default=100, help="queries timed one at a time by brute force")
    ap.add_argument("--data", choices=("embed", "tests"), default="embed")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the parameter sweep")
    ap.add_argument("--sweep-sizes", default="100000,1000000", help="sizes (of --sizes) that get a sweep")
    ap.add_argument("--sweep-dims", default="512", help="dims (of --dims) that get a sweep")
    ap.add_argument(
        "--sweep-nlist-per-sqrt",
        help="IVF nlist = c * sqrt(n) for these c (default 1,2,4,8 up to 200k, 1,2,4 above: 8*sqrt(1M) cells "
        "take ~10 min to train on 2 cores)",
    )
    ap.add_argument("--sweep-timing-queries", type=int, default=200)
    ap.add_argument("--no-sq8", dest="sq8", action="store_false", help="skip IVF,SQ8 in the sweep")
    ap.add_argument("--no-pq", dest="pq", action="store_false", help="skip IVF,PQ x4fs + exact re-rank in the sweep")
    ap.add_argument("--hnsw-max-n", type=int, default=200_000, help="HNSW32 in the sweep up to this size")
    ap.add_argument("--no-record", dest="record", action="store_false", help="only print")
    args = ap.parse_args()
    import faiss

    recipes = load_recipes()
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    sweep_sizes = {int(s) for s in args.sweep_sizes.split(",")} if args.sweep else set()
    sweep_dims = {int(d) for d in args.sweep_dims.split(",")}
    out = Out()
    ivf = recipes["ivf"]
    out(
        f"faiss {faiss.__version__}, numpy {np.__version__}, threads {faiss.omp_get_max_threads()}, "
        f"data {args.data}, {args.queries} queries, k={K}; recipes: "
        + ", ".join(
            f"{r.name} [{r.min_items:,}, {r.max_items:,})" for r in sorted(recipes.values(), key=lambda r: r.min_items)
        )
        + f"; ivf nlist {ivf.params.get('nlist_per_sqrt')}*sqrt(n), nprobe {ivf.params.get('nprobe')}"
    )
    out("recall@10 vs exact over every query; speedup = numpy brute-force p50 / p50")
    out(HEAD)
    t0 = time.perf_counter()
    for n in sizes:
        for dim in dims:
            main_table(args, out, n, dim, recipes, n in sweep_sizes and dim in sweep_dims)
            gc.collect()
    out(f"total {time.perf_counter() - t0:.0f} s")
    record(
        "search",
        "Search: brute force vs the recipe mmsearch picks",
        "```\n" + "\n".join(out.lines) + "\n```",
        enabled=args.record,
    )


if __name__ == "__main__":
    main()
