"""Load test of `mmsearch serve`: POST /search at 1, 4, 16 and 64 concurrent clients over loopback, on a
2k-item and a 100k-item index, batched (the default) against the serialised server (``--max-batch 1``,
one query at a time) in the same run.

    python -m bench.bench_serve [--sizes 2000,100000] [--clients 1,4,16,64] [--seconds 8]

The indexes hold pictures with synthetic vectors written straight into SQLite (bench_query's
``write_index``: builtin's class vectors plus noise), served with the real `builtin` model, so every
request encodes its text. Clients are threads of this process, each with its own HTTP session, sending
text queries of 1-3 words (k = 10) back to back for ``--seconds`` (after a warm-up). Prints and records
QPS, p50 and p99 per setting, the CPU time per request of the server process and of the clients (this
process), and the ratios the issue asks for: batched QPS at 16 clients over its QPS
at one client, and over the serialised server's at 16 clients.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench._report import record

WORDS = (
    "dog cat beach sunset mountain snow car bicycle birthday cake coffee cup flower garden city night "
    "street bridge river boat train plane child friends dinner pizza forest lake tree bird horse"
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`mmsearch serve` on a free loopback port, once /health answers."""
    import requests

    from bench.bench_query import mmsearch_exe

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*mmsearch_exe(), "serve", "--index", str(index), "--port", str(port), *extra]
    server = subprocess.Popen(cmd, env=dict(os.environ), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return server, url
        except requests.ConnectionError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("server did not start")
        time.sleep(0.2)


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (default: this one, all its threads)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str, clients: int, seconds: float, queries: list[str], server_pid: int
) -> tuple[float, float, float, int, float, float]:
    """``clients`` threads sending queries back to back for ``seconds``: (QPS, p50 ms, p99 ms, errors,
    server CPU ms per request, client CPU ms per request)."""
    import requests

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        nonlocal errors
        session = requests.Session()
        session.post(f"{url}/search", json={"text": queries[n % len(queries)], "k": 10}, timeout=60)  # warm
        mine, bad = [], 0
        start.wait()
        i = n * 7
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            r = session.post(f"{url}/search", json={"text": queries[i % len(queries)], "k": 10}, timeout=60)
            mine.append(time.perf_counter() - t)
            bad += r.status_code != 200 or len(r.json()) != 10
            i += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    stop_at = [float("inf")]
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    cpu0 = cpu_s(), cpu_s(server_pid)
    stop_at[0] = t0 + seconds
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = cpu_s(), cpu_s(server_pid)
    ms = np.array(latencies) * 1e3
    per = 1e3 / max(len(ms), 1)
    return (
        len(ms) / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors,
        (cpu1[1] - cpu0[1]) * per, (cpu1[0] - cpu0[0]) * per,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,100000")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    from bench.bench_query import write_index
    from mmsearch import Engine
    from mmsearch.encoders import load_encoder

    enc = load_encoder("builtin")
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)) for _ in range(500)]
    levels = [int(c) for c in args.clients.split(",")]
    settings = (("batched", ()), ("serialised", ("--max-batch", "1")))
    header = (
        f"{'items':>7} {'server':>10} {'clients':>7} {'QPS':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
        f" {'srv cpu':>7} {'cli cpu':>7}"
    )
    table, verdicts = [header], []
    print(header, flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
        try:
            idx = tmp / "idx"
            write_index(idx, n, enc, rng)
            with Engine.open(idx) as eng:
                eng.spaces.get("image")  # FAISS built and saved once, as on first use
                eng.spaces.save()
            qps: dict[tuple[str, int], float] = {}
            for name, extra in settings:
                server, url = start_server(idx, *extra)
                try:
                    for c in levels:
                        q, p50, p99, errors, srv, cli = load(url, c, args.seconds, queries, server.pid)
                        qps[name, c] = q
                        table.append(
                            f"{n:>7} {name:>10} {c:>7} {q:>7.1f} {p50:>7.1f} {p99:>7.1f} {errors:>6}"
                            f" {srv:>7.1f} {cli:>7.1f}"
                        )
                        print(table[-1], flush=True)
                finally:
                    server.terminate()
                    server.wait(30)
            if ("batched", 16) in qps and ("batched", 1) in qps:
                verdicts.append(
                    f"{n} items, 16 clients: batched {qps['batched', 16] / qps['batched', 1]:.2f}x its one-client QPS, "
                    f"{qps['batched', 16] / qps['serialised', 16]:.2f}x the serialised server's"
                )
                print(verdicts[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    body = (
        f"Text queries of 1-3 words to `POST /search`, k = 10, builtin model (every request encodes its text), "
        f"{args.seconds:g} s per setting after a warm-up, clients = threads of the benchmark process (they share "
        "the 2 cores with the server). *serialised* = the same server with `--max-batch 1`. *srv cpu* / *cli cpu* = "
        "CPU ms per request of the server process / of the clients.\n\n```\n"
        + "\n".join(table)
        + "\n```\n\n"
        + "\n".join(f"- {v}" for v in verdicts)
        + "\n"
    )
    record("serve", "Serving concurrent clients (issue 18)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
