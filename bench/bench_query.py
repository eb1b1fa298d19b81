"""Query latency through the product: `mmsearch --help`, a cold CLI query, warm queries in-process and
over HTTP, on an index of N pictures with the real `builtin` model (text encoding included).

The index is written straight into SQLite (the vectors are synthetic: builtin's 1000 class vectors
as cluster centres plus noise, so they live where real pictures' vectors live in MiniLM's space);
FAISS is built from it by the engine with the recipe mmsearch picks at that size, as on first use.

Cold = a new process each time, page cache warm, bytecode compiled (as a pip install leaves it: this
workplace sets PYTHONDONTWRITEBYTECODE, so the benchmark compiles mmsearch first), beside floors measured in
the same run: `python -c pass`, `import torch`, `import numpy, faiss`. Issue 19's targets: a text query
<= 0.8 s at 100k items and <= 1.5 s at 1M, an image query <= 2.0 s.

    python -m bench.bench_query [--sizes 2000,100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench._report import record
from bench.bench_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "dog cat beach sunset mountain snow car bicycle birthday cake coffee cup flower garden city night "
    "street bridge river boat train plane child friends dinner pizza forest lake tree bird horse"
).split()


def mmsearch_exe() -> list[str]:
    exe = shutil.which("mmsearch", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mmsearch.cli"]


def wall(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall seconds of a command (its output discarded)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _digest(i: int) -> str:
    """A content hash as real files give one: uniform hex (calibration samples items by its prefix)."""
    return hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def write_index(idx: Path, n: int, enc: object, rng: np.random.Generator) -> float:
    """Write an index of ``n`` pictures into SQLite directly; returns seconds."""
    import json

    from mmsearch.ingest import ITEM_VECTORS_VERSION
    from mmsearch.store import Store

    t = time.perf_counter()
    idx.mkdir(parents=True)
    store = Store(idx / Store.FILENAME)
    centres = enc.classes  # type: ignore[attr-defined]
    now = time.time()
    with store.engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        for start in range(0, n, 20_000):
            m = min(20_000, n - start)
            x = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, centres.shape[1]))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            ids = range(start + 1, start + m + 1)
            cur.executemany(
                "INSERT INTO items (id, path, modality, size, mtime_ns, content_hash, width, height, status, "
                "indexed_at) VALUES (?, ?, 'image', 3000000, ?, ?, 4000, 3000, 'ok', ?)",
                [(i, f"/photos/{2000 + i % 20}/IMG_{i:07d}.jpg", i, _digest(i), now) for i in ids],
            )
            cur.executemany(
                "INSERT INTO vectors (item_id, space, data) VALUES (?, 'image', ?)",
                [(i, x[j].tobytes()) for j, i in enumerate(ids)],
            )
        meta = {
            "model": "builtin",
            "dim": enc.dim,  # type: ignore[attr-defined]
            "fingerprint": enc.fingerprint,  # type: ignore[attr-defined]
            "modalities": sorted(enc.modalities),  # type: ignore[attr-defined]
            "created": now,
            "item_vectors": ITEM_VECTORS_VERSION,
            "ocr": False,
            "generation:image": 1,
        }
        cur.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
        )
    store.close()
    return time.perf_counter() - t


def pct(ts: list[float]) -> tuple[float, float]:
    a = np.array(ts) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    exe = mmsearch_exe()
    env = {**os.environ, "COLUMNS": "120"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mmsearch"), str(ROOT / "cli")], check=True)
    help_s = wall([*exe, "--help"], 7, env)
    python_s = wall([sys.executable, "-c", "pass"], 7)
    torch_s = wall([sys.executable, "-c", "import torch"], 5)
    faiss_s = wall([sys.executable, "-c", "import numpy, faiss"], 5)
    lines = [
        f"`mmsearch --help`: {help_s * 1e3:.0f} ms (bare `python -c pass`: {python_s * 1e3:.0f} ms; target < 300 ms)",
        f"floors: `python -c pass` {python_s:.2f} s, `import torch` {torch_s:.2f} s, `import numpy, faiss` "
        f"{faiss_s:.2f} s",
    ]
    print("\n".join(lines))

    from mmsearch import Engine
    from mmsearch.encoders import load_encoder

    t = time.perf_counter()
    enc = load_encoder("builtin")
    load_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)) for _ in range(args.queries)]
    table = [
        f"{'items':>9} {'recipe':>8} {'build s':>8} {'cold CLI s':>10} {'warm p50':>9} {'warm p99':>9} "
        f"{'/search p50':>11} {'text enc p50':>12}"
    ]
    image_cold: tuple[int, float] | None = None
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
        try:
            idx = tmp / "idx"
            written = write_index(idx, n, enc, rng)
            t = time.perf_counter()
            with Engine.open(idx) as eng:
                eng.spaces.get("image")  # built from SQLite with the recipe for n, then saved, as on first use
                eng.searcher.save_reference()  # what an index run stores for queries
            build_s = time.perf_counter() - t
            cold = wall([*exe, "query", "a dog on the beach", "--index", str(idx), "--json", "-k", "10"], 5, env)
            if image_cold is None:  # an image query, on the smallest index
                picture = tmp / "query.jpg"
                from PIL import Image

                Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(picture, quality=90)
                image_cold = (n, wall([*exe, "query", "--image", str(picture), "--index", str(idx), "--json"], 5, env))
            with Engine.open(idx) as eng:
                recipe = eng.spaces.recipe("image")  # the encoder: builtin, already loaded in this process
                eng.search("warm up")
                warm, text_only = [], []
                for q in queries:
                    t = time.perf_counter()
                    enc.encode_text([q])
                    text_only.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    hits = eng.search(q, k=10)
                    warm.append(time.perf_counter() - t)
                    assert len(hits) == 10
            http = serve_latency(idx, queries)
            w50, w99 = pct(warm)
            h50, _ = pct(http)
            e50, _ = pct(text_only)
            table.append(
                f"{n:>9} {recipe:>8} {build_s:>8.1f} {cold:>10.2f} {w50:>7.1f}ms {w99:>7.1f}ms "
                f"{h50:>9.1f}ms {e50:>10.1f}ms"
            )
            print(table[-1], f"(SQLite written in {written:.0f} s)", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if image_cold is not None:
        table.append(f"cold CLI image query (--image, a 640x480 JPEG) at {image_cold[0]} items: {image_cold[1]:.2f} s")
    text = "\n".join(table)
    body = (
        f"{lines[0]}\n\n{lines[1]}\n\nbuiltin loads in {load_s:.1f} s in this process. "
        "Warm = `Engine.search` in one process, text "
        f"encoding included, {args.queries} different queries of 1-3 words, k=10; /search = the same over HTTP "
        "to `mmsearch serve` (one client); cold CLI = `mmsearch query` from process start to printed JSON "
        "(imports, model load, FAISS file load, query; median of 5).\n\n```\n" + text + "\n```\n"
    )
    print(text)
    record("query", "Query latency through the product (issues 9, 19)", body, enabled=not args.no_record)


def serve_latency(idx: Path, queries: list[str]) -> list[float]:
    import requests
    import uvicorn

    from mmsearch.server.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(idx), host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.config.port
    out = []
    with requests.Session() as s:
        s.post(f"http://127.0.0.1:{port}/search", json={"text": "warm up", "k": 10}, timeout=60)
        for q in queries:
            t = time.perf_counter()
            r = s.post(f"http://127.0.0.1:{port}/search", json={"text": q, "k": 10}, timeout=60)
            out.append(time.perf_counter() - t)
            r.raise_for_status()
    server.should_exit = True
    thread.join(10)
    return out


if __name__ == "__main__":
    main()
