"""`mmsearch eval`: recall computed as CLIP_benchmark does, on a pairs file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, solid
from typer.testing import CliRunner

from mmsearch.cli import app
from mmsearch.errors import MmsearchError
from mmsearch.evaluation import load_pairs, recall_at_k

runner = CliRunner()


def test_recall_matches_a_hand_computed_case() -> None:
    items = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    texts = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    # caption 0 -> item 0 (rank 0), 1 -> item 1 (rank 2), 2 -> item 2 (rank 1), 3 -> item 2 (rank 0)
    # item 0 -> best own caption at rank 0, item 1 -> rank 2, item 2 -> rank 0
    got = recall_at_k(texts, items, [0, 1, 2, 2], ks=(1, 2, 5))
    assert got["text_to_item"] == {"R@1": 0.5, "R@2": 0.75, "R@5": 1.0}
    assert got["item_to_text"] == {"R@1": pytest.approx(2 / 3), "R@2": pytest.approx(2 / 3), "R@5": 1.0}


def write_pairs(root: Path, rows: list[tuple[str, str]], name: str = "pairs.csv", sep: str = ",") -> Path:
    lines = [f"filepath{sep}caption"] + [f"{p}{sep}{c}" for p, c in rows]
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def test_pairs_file_relative_paths_several_captions_and_errors(tmp_path: Path) -> None:
    solid(tmp_path / "img" / "a.png", "red")
    solid(tmp_path / "img" / "b.png", "blue")
    pairs = load_pairs(write_pairs(tmp_path, [("img/a.png", "red one"), ("img/b.png", "blue"), ("img/a.png", "x")]))
    assert pairs.items == [str(tmp_path / "img" / "a.png"), str(tmp_path / "img" / "b.png")]
    assert pairs.caption_item == [0, 1, 0]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("image\ttext\nimg/a.png\ta red, round thing\n")
    assert load_pairs(tsv, path_key="image", caption_key="text").captions == ["a red, round thing"]
    with pytest.raises(MmsearchError, match="no column 'filepath'"):
        load_pairs(tsv)
    with pytest.raises(MmsearchError, match="no such file img/c.png"):
        load_pairs(write_pairs(tmp_path, [("img/c.png", "gone")], "bad.csv"))


def test_eval_cli_json_ranks_real_results(tmp_path: Path) -> None:
    rows = []
    for colour in COLOURS:
        solid(tmp_path / f"{colour}.png", colour)
        rows += [(f"{colour}.png", f"a {colour} picture"), (f"{colour}.png", f"something {colour}")]
    result = runner.invoke(app, ["eval", str(write_pairs(tmp_path, rows)), "--model", "fake", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["pairs"], out["items"]) == (12, 6)
    assert out["text_to_item"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    assert out["item_to_text"]["R@1"] == 1.0
    # captions that do not name the colour: the fake model cannot solve them, and eval says so
    vague = [(f"{c}.png", f"picture number {i}") for i, c in enumerate(COLOURS)]
    out = json.loads(
        runner.invoke(app, ["eval", str(write_pairs(tmp_path, vague, "v.csv")), "-m", "fake", "--json"]).stdout
    )
    assert out["text_to_item"]["R@1"] < 0.5 and out["text_to_item"]["R@10"] == 1.0
    table = runner.invoke(app, ["eval", str(tmp_path / "pairs.csv"), "-m", "fake"]).stdout
    assert "text to item" in table and "1.000" in table


def test_eval_with_a_text_only_model_is_a_clear_error(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", "red")
    result = runner.invoke(app, ["eval", str(write_pairs(tmp_path, [("a.png", "red")])), "-m", "minilm"])
    assert result.exit_code == 1 and "cannot embed images" in result.stderr
