"""Where benchmark figures go: a section of docs/benchmarks.md, stamped with date, machine and commit.

Each benchmark owns the block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` and
rewrites it on every run (``--no-record`` to only print). The stamp says what produced the figures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(  # figures written by earlier runs do not make the code "changed"
            ["git", "-C", str(ROOT), "status", "--porcelain", "-uno", "--", ".", ":!docs/benchmarks.md"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def stamp() -> str:
    """One line: when, on what, from which code."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} · {cores} cores, {cpu_model()} · Python {platform.python_version()} · commit {git_commit()}"


def command() -> str:
    """The command line that ran this benchmark, as a user would type it."""
    argv = sys.argv[:]
    prog = Path(argv[0])
    if prog.name == "__main__.py" or prog.suffix == ".py" and prog.parent.name == "bench":
        mod = prog.stem
        return " ".join(["python -m bench." + mod, *argv[1:]])
    return " ".join(argv)


def record(name: str, title: str, body: str, *, enabled: bool = True) -> None:
    """Replace (or append) the ``name`` block of docs/benchmarks.md with ``body`` under ``title``."""
    if not enabled:
        return
    block = (
        f"<!-- bench:{name} -->\n## {title}\n\n```sh\n{command()}\n```\n\n"
        f"Run: {stamp()}\n\n{body.rstrip()}\n<!-- /bench:{name} -->"
    )
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
    print(f"\nrecorded in {DOC} (section {title!r})")
