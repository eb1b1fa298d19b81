"""Memory while indexing: peak RSS of `mmsearch index` over 1k, 3k and 10k pictures, and index bytes per item.

Each run is a fresh process over a fresh index; its peak RSS (``ru_maxrss``) should stay flat as the
collection grows (bounded by the batch and the decode window, not the number of files); what grows
is the index on disk (SQLite rows with every vector, one FAISS file per space).

By default the tests' deterministic ``fake`` model embeds (the pipeline, not the model, is what this
measures, and 10k pictures through builtin take ~10 minutes); ``--model builtin`` for the real one.

    python -m bench.bench_memory [--sizes 1000,3000,10000] [--model fake]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench._report import record
from bench.corpus import CACHE

ROOT = Path(__file__).resolve().parent.parent
# Runs the CLI in a child with `fake` registered and reports its own peak RSS on the way out.
# The peak is read from /proc's VmHWM, this process's own memory: ru_maxrss would carry over the peak of
# whatever process started the benchmark (Linux keeps it across fork and exec).
CHILD = """
import runpy, sys
sys.argv = ["mmsearch", *sys.argv[1:]]
try:
    runpy.run_path({fake_cli!r}, run_name="__main__")
finally:
    hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
    print("MAXRSS_KB", hwm.split()[1], file=sys.stderr)
"""


def _photo(args: tuple[int, str]) -> None:
    i, path = args
    rng = np.random.default_rng(i)
    base = rng.integers(0, 255, 3)
    arr = np.clip(base + rng.normal(0, 25, (480, 640, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=85)


def folder(n: int) -> Path:
    root = CACHE / f"small-{n}"
    if (root / ".complete").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(root / f"DSC{i:05d}.jpg")) for i in range(n) if not (root / f"DSC{i:05d}.jpg").exists()]
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(_photo, jobs, chunksize=64))
    (root / ".complete").touch()
    return root


def run_index(photos: Path, idx: Path, model: str) -> tuple[float, int, float]:
    """(peak RSS MiB, items, seconds) of one `mmsearch index` process."""
    code = CHILD.format(fake_cli=str(ROOT / "tests" / "fake_cli.py"))
    t = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "index",
            str(photos),
            "--index",
            str(idx),
            "--model",
            model,
            "--no-ocr",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"index failed: {done.stderr[-2000:]}")
    kb = int(next(ln.split()[1] for ln in done.stderr.splitlines() if ln.startswith("MAXRSS_KB")))
    import json

    items = sum(json.loads(done.stdout)["counts"].values())
    return kb / 1024, items, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,3000,10000")
    ap.add_argument("--model", default="fake", help="fake (the tests' model) or a real one, e.g. builtin")
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    photos = folder(max(sizes))
    lines = [f"{'pictures':>9} {'peak RSS MiB':>12} {'index MiB':>10} {'bytes/item':>10} {'seconds':>8}"]
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
        try:
            sub = tmp / "photos"
            sub.mkdir()
            for p in sorted(photos.glob("*.jpg"))[:n]:
                try:
                    os.link(p, sub / p.name)  # the n first pictures, without copying them
                except OSError:  # another filesystem
                    shutil.copyfile(p, sub / p.name)
            rss, items, secs = run_index(sub, tmp / "idx", args.model)
            assert items == n, (items, n)
            size = sum(f.stat().st_size for f in (tmp / "idx").iterdir() if f.is_file())
            lines.append(f"{n:>9} {rss:>12.0f} {size / 2**20:>10.1f} {size / n:>10.0f} {secs:>8.1f}")
            print(lines[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    table = "\n".join(lines)
    print(table)
    body = (
        f"640x480 JPEGs, model `{args.model}`, batch 32, OCR off; each run a new process and a new index; peak RSS "
        "is the process's `ru_maxrss` (the interpreter, torch and the model included).\n\n```\n" + table + "\n```\n"
    )
    record("memory", "Memory while indexing (issue 9)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
