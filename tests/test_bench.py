"""The benchmarks still run (tiny sizes), and their figures land in their own section of the doc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "MMSEARCH_BENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "bench/run.py", *args, "--no-record"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_record_replaces_only_its_own_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT))
    from bench import _report

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written intro\n")
    monkeypatch.setattr(_report, "DOC", doc)
    _report.record("a", "Section A", "first figures")
    _report.record("b", "Section B", "other figures")
    _report.record("a", "Section A", "second figures")
    text = doc.read_text()
    assert "hand-written intro" in text and "other figures" in text and "second figures" in text
    assert "first figures" not in text and text.count("<!-- bench:a -->") == 1
    assert "commit " in text and "cores" in text  # the stamp: when, on what, from which code


@pytest.mark.slow
def test_the_issue_9_benchmarks_run_at_tiny_sizes(tmp_path: Path) -> None:
    out = bench(tmp_path, "memory", "--sizes", "30,60")
    assert "peak RSS MiB" in out and len([ln for ln in out.splitlines() if ln.strip().startswith("60 ")]) >= 1
    out = bench(tmp_path, "search", "--sizes", "3000", "--dims", "32", "--queries", "20")
    assert "recall" in out.lower()
    out = bench(tmp_path, "index", "--jpegs", "3", "--pngs", "2", "--naive", "3")
    assert "end to end / naive loop" in out
    out = bench(tmp_path, "flops", "--batch", "2", "--batches", "1", "--reps", "1", "--matmul-n", "256")
    assert "GFLOPs/image" in out and "ViT-B-32" in out
    out = bench(tmp_path, "query", "--sizes", "2000", "--queries", "5")
    assert "--help" in out and "warm p50" in out
    out = bench(tmp_path, "video", "--intervals", "2", "--long-minutes", "0.5")
    assert "scenes found" in out and "frames/s end to end" in out and "Peak RSS" in out
    out = bench(tmp_path, "ab", "HEAD", "--photos", "2", "--items", "500", "--queries", "5", "--rounds", "1")
    assert "this / HEAD" in out and "warm query p50 ms" in out
    listing = subprocess.run([sys.executable, "bench/run.py"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 2 and "index" in listing.stdout and "search" in listing.stdout
