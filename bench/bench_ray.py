"""`mmsearch index --ray` on a local Ray cluster against the local pipeline, same folder, same run.

On one machine Ray can only cost: the same cores decode and embed, plus actor start-up (each actor imports
torch and loads the model), pickling batches to the driver, and Ray's own processes. This measures that
overhead; the gain comes with more machines (docs/scaling.md).

Rounds alternate local and Ray runs into new indexes over the folder of bench/corpus.py; the cluster is
started once before the first round (its start-up is reported on its own line).

    python -m bench.bench_ray [--jpegs 200] [--pngs 100] [--rounds 2] [--model builtin]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench._report import record
from bench.bench_index import end_to_end
from bench.corpus import folder_bytes, photo_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jpegs", type=int, default=200, help="12 MP camera JPEGs in the folder")
    ap.add_argument("--pngs", type=int, default=100, help="small PNGs in the folder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    from mmsearch.ingest.distributed import connect

    folder = photo_folder(args.jpegs, args.pngs)
    cores = len(os.sched_getaffinity(0))
    print(f"folder {folder}: {folder_bytes(folder) / 1e6:.0f} MB; model {args.model}; {cores} cores")
    t = time.perf_counter()
    ray = connect(None)
    started = time.perf_counter() - t
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"local Ray cluster: {cpus} CPUs, started in {started:.1f} s")
    times: dict[str, list[float]] = {"local": [], "ray": []}
    n = 0
    for r in range(args.rounds):
        for kind in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
            _, n, seconds = end_to_end(folder, args.model, args.batch_size, ocr=False, ray=kind == "ray")
            times[kind].append(seconds)
            print(f"round {r + 1} {kind:<5} {n} files in {seconds:6.1f} s = {n / seconds:6.1f} files/s", flush=True)
    local, remote = statistics.median(times["local"]), statistics.median(times["ray"])
    lines = [
        f"{'pipeline':<34} {'files/s':>8}  {'seconds':>8}",
        f"{'local (decode threads + encoder)':<34} {n / local:>8.1f}  {local:>8.1f}",
        f"{'--ray, local cluster':<34} {n / remote:>8.1f}  {remote:>8.1f}",
        "",
        f"--ray / local = {local / remote:.2f}x throughput (the cost of Ray on one machine; actors start and load "
        "the model in every run)",
        f"cluster start-up (once per process): {started:.1f} s, {cpus} CPUs",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    body = (
        f"Folder: {args.jpegs} camera JPEGs (4000x3000) + {args.pngs} small PNGs, {folder_bytes(folder) / 1e6:.0f} MB; "
        f"model {args.model}, batch {args.batch_size}, {cores} cores, medians of {args.rounds} alternating rounds, "
        "model loaded in the driver before timing (the actors load their own inside it).\n\n"
        f"```\n{table}\n```\n"
    )
    record("ray", "Indexing on Ray vs locally (issue 20)", body, enabled=not args.no_record)
    ray.shutdown()


if __name__ == "__main__":
    main()
