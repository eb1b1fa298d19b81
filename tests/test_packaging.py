"""The wheel ships one import package: mmsearch (with mmsearch.cli and the TOML recipes)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_has_cli_and_recipes_inside_mmsearch_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "-w",
            str(tmp_path),
            "--no-deps",
            "--no-build-isolation",
            "-q",
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mmsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("mmsearch-")}
    assert tops == {"mmsearch"}  # no bare `cli` or `indexes`
    assert "mmsearch/cli/__init__.py" in names and "mmsearch/py.typed" in names
    assert {"mmsearch/indexes/flat.toml", "mmsearch/indexes/ivf.toml", "mmsearch/indexes/ivf-sq8.toml"} <= set(names)
    assert not any(n.startswith("mmsearch/indexes/") and n.endswith(".py") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mmsearch = mmsearch.cli:app" in entry
    # every package of the source tree is in the wheel (mmsearch.training was missing from a hand-kept list)
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "mmsearch").rglob("__init__.py")}
    assert packages <= set(names), packages - set(names)
    assert {f"mmsearch/modalities/{m}.py" for m in ("image", "text", "audio", "base")} <= set(names)
