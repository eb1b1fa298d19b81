"""Crash safety: SIGKILL an indexer at random moments, Ctrl-C one; the index stays whole and exact."""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, solid

from mmsearch.store import Store
from mmsearch.vector_index import VectorIndex, load_recipes

FAKE_CLI = [sys.executable, str(Path(__file__).parent / "fake_cli.py")]
QUERIES = ["red", "blue car", "green", "yellow sea", "black and white"]


def index_cmd(lib: Path, idx: Path) -> list[str]:
    return [*FAKE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--no-ocr", "-q"]


def make_library(lib: Path, rng: random.Random, n_images: int = 240, n_notes: int = 30) -> None:
    for i in range(n_images):
        size = (rng.randint(48, 160), rng.randint(48, 160))
        solid(lib / f"d{i % 7}" / f"img{i:04d}.png", rng.choice(COLOURS), size=size)
    for i in range(n_notes):
        (lib / "notes").mkdir(parents=True, exist_ok=True)
        (lib / "notes" / f"n{i:03d}.txt").write_text(f"a note about {rng.choice(COLOURS)} things number {i}")


def churn(lib: Path, rng: random.Random, step: int) -> None:
    """Give the next run work: rewrite, add and delete some files."""
    images = sorted(lib.rglob("*.png"))
    for p in rng.sample(images, 25):
        solid(p.with_name(f"new{step:03d}-{p.name}"), rng.choice(COLOURS), size=(rng.randint(48, 160), 64))
    for p in rng.sample(images, 10):
        p.unlink()
    for p in rng.sample(sorted(lib.rglob("*.txt")), 3):
        p.write_text(f"rewritten at step {step}: {rng.choice(COLOURS)}")


def check_whole(idx: Path, lib: Path) -> dict[str, int]:
    """Every file once, no orphan or missing vectors, FAISS files fresh and equal to SQLite."""
    files = {str(p) for p in lib.rglob("*") if p.suffix in (".png", ".txt")}
    store = Store(idx / Store.FILENAME)
    try:
        known = store.known_files()
        assert set(known) == files  # every file, exactly once (paths are unique in SQLite)
        with store.engine.connect() as conn:
            orphans = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM vectors WHERE item_id NOT IN (SELECT id FROM items)"
            ).scalar()
            missing = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM items WHERE id NOT IN (SELECT item_id FROM vectors WHERE space = items.modality)"
            ).scalar()
        assert orphans == 0 and missing == 0
        recipes = load_recipes()
        for space in store.spaces():
            vi, generation = VectorIndex.load(idx / f"{space}.faiss", recipes, space)
            assert generation == store.generation(space), space  # the cache reflects the last commit
            np.testing.assert_array_equal(np.sort(vi.ids()), store.ids(space))
        return {"items": len(known)}
    finally:
        store.close()


def results(idx: Path) -> list[dict[str, float]]:
    """Every item's score for a few queries (ids differ between indexes, so ties may order differently)."""
    out = []
    for q in QUERIES:
        cmd = [*FAKE_CLI, "query", q, "--index", str(idx), "--json", "-k", "10000", "--target", "any"]
        hits = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        out.append({h["path"]: round(h["score"], 5) for h in hits})
    return out


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_or_corrupts_anything(tmp_path: Path) -> None:
    rng = random.Random(0)
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, rng)
    subprocess.run(index_cmd(lib, idx), check=True)
    kills, delays, step, durations = 0, [], 0, []
    run_time = 1.5  # seconds an incremental run takes, startup included (re-measured on every run below)
    while kills < 50:
        assert step < 120, f"only {kills} kills in {step} runs"
        churn(lib, rng, step)
        step += 1
        proc = subprocess.Popen(index_cmd(lib, idx), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.1, 0.95 * run_time)  # startup/walk, encode, commit and FAISS save all fall in here
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            delays.append(delay)
        t = time.perf_counter()
        done = subprocess.run(index_cmd(lib, idx), capture_output=True, text=True)
        durations.append(time.perf_counter() - t)
        run_time = statistics.median(durations)  # kills stay spread over a whole run as it gets faster
        assert done.returncode == 0, done.stderr
        check_whole(idx, lib)
    clean = tmp_path / "clean"
    subprocess.run(index_cmd(lib, clean), check=True)
    assert results(idx) == results(clean)  # same answers as one uninterrupted run
    print(f"\nSIGKILLs: {kills} in {step} runs, {min(delays):.2f}-{max(delays):.2f} s into runs of ~{run_time:.1f} s")


@pytest.mark.slow
def test_ctrl_c_stops_within_two_seconds_and_keeps_committed_work(tmp_path: Path) -> None:
    rng = random.Random(1)
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, rng, n_images=2500, n_notes=0)
    proc = subprocess.Popen(
        [*FAKE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--no-ocr", "--batch-size", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (idx / "index.sqlite3").exists() or Store(idx / Store.FILENAME).counts().get("image", 0) < 50:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.1)
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    stopped = time.perf_counter() - t
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err
    assert stopped < 2.0, stopped
    store = Store(idx / Store.FILENAME)
    kept = store.counts().get("image", 0)
    store.close()
    assert 50 <= kept < 2500
    done = subprocess.run(index_cmd(lib, idx), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert check_whole(idx, lib)["items"] == 2500
    print(f"\nCtrl-C: stopped in {stopped:.2f} s, kept {kept} items")
    assert os.path.exists(idx / "image.faiss")
