"""`--target any` over a real mixed folder (tests/mixed_folder.py): one scale for pictures, notes and sounds
(each part's score in the units of the item's own space), so the note that matches comes up with the photo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mixed_folder import SUBJECTS, write
from typer.testing import CliRunner

from mmsearch.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib, idx = write(tmp_path_factory.mktemp("mixed")), tmp_path_factory.mktemp("idx")
    result = runner.invoke(app, ["index", str(lib), "--index", str(idx), "--model", "builtin"])
    assert result.exit_code == 0, result.output
    return idx


@pytest.mark.parametrize("query", list(SUBJECTS))  # "a rocket": the note was 7th behind six pictures
def test_the_matching_photo_and_note_are_both_in_the_top_three(mixed: Path, query: str) -> None:
    photo, note, _ = SUBJECTS[query]
    result = runner.invoke(app, ["query", query, "--target", "any", "--index", str(mixed), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    top = [Path(h["path"]).name for h in json.loads(result.output)]
    assert photo in top and note in top, top


def test_a_note_only_query_puts_the_note_first(mixed: Path) -> None:
    result = runner.invoke(app, ["query", "a budget meeting", "--target", "any", "--index", str(mixed), "--json"])
    hits = json.loads(result.output)
    assert Path(hits[0]["path"]).name == "meeting.txt" and hits[0]["score"] > 2 * hits[1]["score"] > 0
