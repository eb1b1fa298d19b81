"""Run one benchmark by name: ``python bench/run.py NAME [ARGS...]`` (``python bench/run.py`` lists them)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print("usage: python bench/run.py NAME [ARGS...]\nbenchmarks: " + ", ".join(names))
        raise SystemExit(2)
    name = sys.argv[1]
    sys.argv = [str(HERE / f"bench_{name}.py"), *sys.argv[2:]]
    sys.path.insert(0, str(HERE.parent))
    # imported, not run as __main__: worker processes must be able to import its functions
    importlib.import_module(f"bench.bench_{name}").main()


if __name__ == "__main__":
    main()
