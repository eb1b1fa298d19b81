"""Load test of `mmsearch serve`: /search at N concurrent clients over loopback, from another process.

    python bench/bench_serve.py [--clients 10] [--requests 400] [--max-seconds 120]

Builds an index of the sample photos (tests/real_photos.py) with the builtin model, starts
`mmsearch serve` as a subprocess, then sends text queries from this process with ``--clients``
threads (bounded by count and time). Prints p50/p99 latency and QPS, and the same queries through
`Engine.search` in one process (no HTTP, one at a time) as the baseline.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QUERIES = [
    "a cat", "a cup of coffee", "a rocket launch", "a motorcycle", "an astronaut", "the moon", "coins",
    "a flower", "a building", "a camera", "stars in space", "a brick wall", "grass", "a portrait of a woman",
    "a red vehicle", "something to drink", "an animal sleeping", "a night sky", "a machine", "a garden",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-seconds", type=float, default=120)
    args = ap.parse_args()
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        photos, index = Path(tmp) / "photos", Path(tmp) / "index"
        subprocess.run([sys.executable, str(ROOT / "tests" / "real_photos.py"), str(photos)], check=True)
        mm = [str(Path(sys.executable).with_name("mmsearch"))]
        subprocess.run([*mm, "index", str(photos), "--index", str(index), "-q"], check=True)

        from mmsearch import Engine

        with Engine.open(index) as eng:
            eng.search(QUERIES[0])
            base = []
            for q in QUERIES * 3:
                t = time.perf_counter()
                eng.search(q, k=10)
                base.append(time.perf_counter() - t)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*mm, "serve", "--index", str(index), "--port", str(port)], env=dict(os.environ))
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if requests.get(f"{url}/health", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.2)
            latencies: list[float] = []
            errors = 0
            lock = threading.Lock()
            counter = iter(range(args.requests))
            stop_at = time.time() + args.max_seconds

            def client(n: int) -> None:
                nonlocal errors
                session = requests.Session()
                while time.time() < stop_at:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    t = time.perf_counter()
                    r = session.post(f"{url}/search", json={"text": QUERIES[i % len(QUERIES)], "k": 10}, timeout=60)
                    dt = time.perf_counter() - t
                    with lock:
                        latencies.append(dt)
                        errors += not r.ok

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(30)
    ms = np.array(latencies) * 1000
    print(f"{len(latencies)} requests, {args.clients} concurrent clients, {errors} errors, {wall:.1f} s")
    print(
        f"/search over HTTP: p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"{len(latencies) / wall:.1f} QPS"
    )
    b = statistics.median(base) * 1000
    print(f"Engine.search in-process, one at a time: p50 {b:.1f} ms ({1000 / b:.1f} QPS single-threaded)")


if __name__ == "__main__":
    main()
