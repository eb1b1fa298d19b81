"""Load test of `mmsearch serve`: POST /search at 1, 4, 16 and 64 concurrent clients over loopback, on a
2k-item and a 100k-item index, batched (the default) against the serialised server (``--max-batch 1``,
one query at a time) and the batched one with ``--workers 2``, in the same run: all three stay up, and each
level alternates between them in ``--rounds`` segments, so a shared machine that slows down for a while
slows all alike.

    python -m bench.bench_serve [--sizes 2000,100000] [--clients 1,4,16,64] [--seconds 8] [--rounds 4]

The indexes hold pictures with synthetic vectors written straight into SQLite (bench_query's
``write_index``: builtin's class vectors plus noise), served with the real `builtin` model, so every
request encodes its text. Clients are threads of this process, each with its own keep-alive connection
(``http.client``), sending text queries of 1-3 words (k = 10) back to back for ``--seconds`` (after a
warm-up). Prints and records QPS, p50 and p99 per setting, the CPU time per request of the server's
processes and of the clients (this process), and the ratios the issue asks for: batched QPS at 16 clients
over its QPS at one client, and over the serialised server's at 16 clients (for one server process and for
``--workers 2``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
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
    """CPU seconds (user + system) used so far by process ``pid`` and the processes it started (``--workers``),
    or by this process (all its threads)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    total, family = 0.0, {pid}
    stats = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                stats.append((int(proc.name), (proc / "stat").read_text().rsplit(")", 1)[1].split()))
        except OSError:  # gone meanwhile
            continue
    stats.sort()  # children have larger pids than their parents (no wrap-around on a bench run)
    for p, fields in stats:
        if p == pid or int(fields[1]) in family:
            family.add(p)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Tally:
    """What the clients of one setting measured, summed over its segments."""

    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float, int, float, float]:
        """(QPS, p50 ms, p99 ms, errors, server CPU ms per request, client CPU ms per request)."""
        ms = np.array(self.latencies) * 1e3
        per = 1e3 / max(self.requests, 1)
        return (
            self.requests / max(self.seconds, 1e-9), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
            self.errors, self.server_cpu * per, self.client_cpu * per,
        )  # fmt: skip


def load(url: str, clients: int, seconds: float, bodies: list[bytes], server_pid: int, tally: Tally) -> None:
    """``clients`` threads sending queries back to back for ``seconds``, each on its own keep-alive
    connection (``http.client``: ~0.5 ms of client CPU a request where ``requests`` took ~2.5, which 16
    threads of one process paid one after another under its GIL, in the batched server's way: its next
    batch waits for them), added to ``tally``."""
    host, port = url.removeprefix("http://").split(":")
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [float("inf")]

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def post(body: bytes) -> bool:
            conn.request("POST", "/search", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            hits = json.loads(r.read())
            return r.status == 200 and len(hits) == 10

        post(bodies[n % len(bodies)])  # warm: connected, and the first batch formed
        mine, bad = [], 0
        start.wait()
        i = n * 7
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            ok = post(bodies[i % len(bodies)])
            mine.append(time.perf_counter() - t)
            bad += not ok
            i += 1
        conn.close()
        with lock:
            tally.latencies.extend(mine)
            tally.errors += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    cpu0 = cpu_s(), cpu_s(server_pid)
    stop_at[0] = t0 + seconds
    before = len(tally.latencies)
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = cpu_s(), cpu_s(server_pid)
    tally.requests += len(tally.latencies) - before
    tally.seconds += wall
    tally.client_cpu += cpu1[0] - cpu0[0]
    tally.server_cpu += cpu1[1] - cpu0[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,100000")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=8.0, help="per setting and level, over all its rounds")
    ap.add_argument("--rounds", type=int, default=4, help="segments each level alternates the servers in")
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    from bench.bench_query import write_index
    from mmsearch import Engine
    from mmsearch.encoders import load_encoder

    enc = load_encoder("builtin")
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)) for _ in range(500)]
    bodies = [json.dumps({"text": q, "k": 10}).encode() for q in queries]
    levels = [int(c) for c in args.clients.split(",")]
    settings = (("batched", ()), ("2 workers", ("--workers", "2")), ("serialised", ("--max-batch", "1")))
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
            # Both servers resident; each level alternates between them in ``--rounds`` segments, so a
            # machine that slows down for a while (a shared host) slows both alike.
            servers = [(name, *start_server(idx, *extra)) for name, extra in settings]
            try:
                for _, server, url in servers:  # every worker up and warm before anything counts
                    load(url, max(levels), 2.0, bodies, server.pid, Tally())
                for c in levels:
                    tallies = {name: Tally() for name, _, _ in servers}
                    for _ in range(args.rounds):
                        for name, server, url in servers:
                            load(url, c, args.seconds / args.rounds, bodies, server.pid, tallies[name])
                    for name, _, _ in servers:
                        q, p50, p99, errors, srv, cli = tallies[name].row()
                        qps[name, c] = q
                        table.append(
                            f"{n:>7} {name:>10} {c:>7} {q:>7.1f} {p50:>7.1f} {p99:>7.1f} {errors:>6}"
                            f" {srv:>7.1f} {cli:>7.1f}"
                        )
                        print(table[-1], flush=True)
            finally:
                for _, server, _ in servers:
                    server.terminate()
                    server.wait(30)
            if ("batched", 16) in qps and ("batched", 1) in qps:
                ratios = {
                    name: (qps[name, 16] / qps[name, 1], qps[name, 16] / qps["serialised", 16])
                    for name in ("batched", "2 workers")
                }
                verdicts.append(
                    f"{n} items, 16 clients: batched {ratios['batched'][0]:.2f}x its one-client QPS, "
                    f"{ratios['batched'][1]:.2f}x the serialised server's; with 2 workers "
                    f"{ratios['2 workers'][0]:.2f}x and {ratios['2 workers'][1]:.2f}x"
                )
                print(verdicts[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    body = (
        f"Text queries of 1-3 words to `POST /search`, k = 10, builtin model (every request encodes its text), "
        f"{args.seconds:g} s per setting and level after a warm-up, alternating between the servers in "
        f"{args.rounds} segments, clients = threads of the benchmark process on keep-alive `http.client` "
        "connections (they share the 2 cores with the server). *serialised* = the same server with `--max-batch 1`; "
        "*2 workers* = batched with `--workers 2`. *srv cpu* / *cli cpu* = CPU ms per request of the server's "
        "processes / of the clients.\n\n```\n"
        + "\n".join(table)
        + "\n```\n\n"
        + "\n".join(f"- {v}" for v in verdicts)
        + "\n"
    )
    record("serve", "Serving concurrent clients (issue 18)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
