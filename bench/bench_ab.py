"""This checkout against an earlier commit, in the same run: indexing throughput and warm query latency.

``python -m bench.bench_ab REV`` checks REV out beside this tree (a git worktree), then, in fresh processes
whose ``PYTHONPATH`` points at one tree or the other, alternately (A B A B ...) so a busy machine weighs on
both alike:

- **index**: `mmsearch index` of camera-sized JPEGs (``bench/corpus.py``) with ``builtin``, OCR off, into a
  new index each round; files/s of the whole command.
- **query**: warm ``Engine.search`` of text queries (MiniLM encoding included) over a synthetic index of
  ``--items`` pictures built once by REV's own code (this tree migrates a copy on first open).
- **cold**: `mmsearch query TEXT --json` over that index, a new process each time (bytecode compiled first,
  page cache warm), wall time from start to exit.

It prints medians and the ratio this/REV (above 1: this tree is faster), and records them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import record  # noqa: E402
from bench.corpus import photo_folder  # noqa: E402

INDEX_CHILD = """
import json, sys, time
sys.argv = ["mmsearch", "index", sys.argv[1], "--index", sys.argv[2], "--no-ocr", "-q", "--json"]
from mmsearch.cli import app
t = time.perf_counter()
try:
    app()
except SystemExit as e:
    assert e.code in (0, None), e.code
print("RESULT", json.dumps({"seconds": time.perf_counter() - t}))
"""

BUILD_CHILD = """
import hashlib, sys, numpy as np
from pathlib import Path
from mmsearch import Engine
from mmsearch.store import ItemRecord
idx, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
with Engine.open(idx, model="builtin", create=True) as eng:
    enc = eng.encoder
    centres = eng.embed_text([f"a photo of {w}" for w in ("a dog", "a cat", "the sea", "a city", "food", "a tree",
                                                         "a car", "a mountain", "a child", "a document")])
    for start in range(0, n, 5000):
        m = min(5000, n - start)
        x = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, enc.dim))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        digest = [hashlib.sha256((start + i).to_bytes(8, "little")).hexdigest() for i in range(m)]  # uniform
        recs = [ItemRecord(f"/photos/{start + i:07d}.jpg", "image", 1, 1, digest[i], x[i]) for i in range(m)]
        eng.store.write_batch(recs, {})
    eng.search(text="warm up")  # builds and saves the FAISS file
    eng.searcher.save_reference()  # what an index run stores
print("RESULT {}")
"""

QUERY_CHILD = """
import json, sys, time
from mmsearch import Engine
queries = json.loads(sys.argv[2])
with Engine.open(sys.argv[1]) as eng:
    for q in queries[:5]:
        eng.search(text=q, k=10)
    times = []
    for q in queries:
        t = time.perf_counter()
        eng.search(text=q, k=10)
        times.append(time.perf_counter() - t)
times.sort()
print("RESULT", json.dumps({"p50_ms": 1e3 * times[len(times) // 2], "p90_ms": 1e3 * times[int(len(times) * 0.9)]}))
"""


def worktree(rev: str, where: Path) -> Path:
    """REV checked out at ``where``, importable as ``mmsearch`` from ``PYTHONPATH`` (its ``cli/`` and
    ``indexes/`` linked into the package, as the installed wheel maps them)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)  # fmt: skip
    for sub in ("cli", "indexes"):
        link = where / "mmsearch" / sub
        if not link.exists():
            link.symlink_to(where / sub)
    return where


def run_child(tree: Path, code: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def cold_query(tree: Path, idx: Path, runs: int = 3) -> float:
    """Median wall seconds of a cold `mmsearch query` process with ``tree`` on ``PYTHONPATH``."""
    import time

    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "mmsearch.cli", "query", "a dog on the beach", "--index", str(idx), "--json"]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=tree)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="the commit to compare with (e.g. HEAD~1, a tag)")
    ap.add_argument("--photos", type=int, default=120, help="camera JPEGs indexed per round")
    ap.add_argument("--items", type=int, default=100_000, help="pictures in the query benchmark's index")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-ab-"))
    base = worktree(args.rev, tmp / "base")
    trees = {"this": ROOT, args.rev: base}
    try:
        photos = photo_folder(args.photos, 0)
        rng_words = ["a dog on the beach", "birthday cake", "city at night", "a red car", "mountain lake",
                     "receipt", "a cat asleep", "snow", "a bridge", "kids playing"]  # fmt: skip
        queries = [f"{w} {i}" for i in range(args.queries // len(rng_words) + 1) for w in rng_words][: args.queries]
        built = tmp / "query-base"
        run_child(base, BUILD_CHILD, str(built), str(args.items))
        copies = {"this": tmp / "query-this", args.rev: built}
        shutil.copytree(built, copies["this"])
        index_s: dict[str, list[float]] = {k: [] for k in trees}
        p50: dict[str, list[float]] = {k: [] for k in trees}
        cold: dict[str, list[float]] = {k: [] for k in trees}
        for tree in trees.values():  # as an install leaves it (this workplace sets PYTHONDONTWRITEBYTECODE)
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mmsearch"), str(tree / "cli")])
        for r in range(args.rounds):
            for name, tree in trees.items():
                idx = tmp / f"idx-{name}-{r}"
                index_s[name].append(run_child(tree, INDEX_CHILD, str(photos), str(idx))["seconds"])
                shutil.rmtree(idx, ignore_errors=True)
                p50[name].append(run_child(tree, QUERY_CHILD, str(copies[name]), json.dumps(queries))["p50_ms"])
                cold[name].append(cold_query(tree, copies[name]))
                print(f"round {r + 1} {name}: index {index_s[name][-1]:.1f} s, warm query p50 {p50[name][-1]:.1f} ms, "
                      f"cold query {cold[name][-1]:.2f} s", flush=True)  # fmt: skip
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [f"{'':>12} {'index files/s':>14} {'warm query p50 ms':>18} {'cold query s':>13}"]
    speed = {k: args.photos / statistics.median(v) for k, v in index_s.items()}
    lat = {k: statistics.median(v) for k, v in p50.items()}
    cold_s = {k: statistics.median(v) for k, v in cold.items()}
    for name in trees:
        rows.append(f"{name:>12} {speed[name]:>14.1f} {lat[name]:>18.1f} {cold_s[name]:>13.2f}")
    rows.append(
        f"{'this / ' + args.rev:>12} {speed['this'] / speed[args.rev]:>13.2f}x {lat[args.rev] / lat['this']:>17.2f}x"
        f" {cold_s[args.rev] / cold_s['this']:>12.2f}x"
    )
    table = "\n".join(rows)
    print(table)
    body = (
        f"`python -m bench.bench_ab {args.rev}`: {args.photos} camera JPEGs (12 MP) indexed with builtin, OCR off, a "
        f"new index each round; warm text queries (encoding included) over {args.items:,} pictures, and a cold "
        f"`mmsearch query` process over them (median of 3 a round); {args.rounds} rounds, A and B alternating, "
        "medians. Ratios above 1x: this tree is faster.\n\n```\n" + table + "\n```\n"
    )
    record("ab", f"This tree against {args.rev} (same run)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
