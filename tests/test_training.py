"""Contrastive training: the loss by hand, and train -> eval on unseen combinations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from synthetic import write_split
from typer.testing import CliRunner

from mmsearch.cli import app
from mmsearch.training.loss import clip_loss

runner = CliRunner()


def test_clip_loss_equals_a_hand_computed_value() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # scale 1: logits = [[1, .6], [0, .8]]
    i2t = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(-0.8))) / 2
    t2i = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-0.2))) / 2
    got = clip_loss(image, text, torch.tensor(0.0))
    assert float(got) == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    # temperature: scale 2 on the identity case gives log(1 + e^-2)
    assert float(clip_loss(image, image, torch.tensor(math.log(2.0)))) == pytest.approx(math.log(1 + math.exp(-2)))
    # equal captions are positives of each other, not negatives: two identical rows -> log(2)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(clip_loss(same, same, torch.tensor(0.0), torch.tensor([0, 0]))) == pytest.approx(math.log(2))
    scale = torch.nn.Parameter(torch.tensor(0.0))
    clip_loss(image, text, scale).backward()
    assert scale.grad is not None and float(scale.grad) != 0.0  # the temperature is learned


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_split(tmp_path_factory.mktemp("scenes"))


def eval_r1(pairs: Path, model: str) -> float:
    out = runner.invoke(app, ["eval", str(pairs), "--model", model, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)["text_to_item"]["R@1"]


@pytest.mark.slow
def test_training_beats_zero_shot_by_30_points_on_unseen_combinations(scenes, tmp_path: Path) -> None:
    train_csv, test_csv = scenes
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(train_csv), "--out", str(out), "--epochs", "15", "--seed", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["best_val"]["R@1"] > report["zero_shot_val"]["R@1"]
    assert [h["epoch"] for h in report["history"]] == list(range(1, 16))
    zero_shot, trained = eval_r1(test_csv, "builtin"), eval_r1(test_csv, str(out))
    assert trained >= zero_shot + 0.30, (zero_shot, trained)

    # the model directory works wherever a model name goes: index the held-out pictures alone and
    # query with their captions; top-5 hits match what eval measures on the same 24 items
    import csv
    import shutil

    rows = list(csv.DictReader(test_csv.open()))
    folder = tmp_path / "held-out"
    folder.mkdir()
    for row in rows:
        shutil.copy(test_csv.parent / row["filepath"], folder / row["filepath"])
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(folder), "--model", str(out), "--index", str(idx), "-q"]).exit_code == 0
    found = 0
    for row in rows:
        out_q = runner.invoke(app, ["query", row["caption"], "--index", str(idx), "--json", "-k", "5"])
        found += row["filepath"] in {Path(h["path"]).name for h in json.loads(out_q.stdout)}
    assert found / len(rows) >= 0.8
    other = tmp_path / "idx-builtin"
    runner.invoke(app, ["index", str(folder), "--model", "builtin", "--index", str(other), "-q"])
    refused = runner.invoke(app, ["index", str(folder), "--model", str(out), "--index", str(other)])
    assert refused.exit_code == 1 and "re-index" in refused.stderr


@pytest.mark.slow
def test_same_seed_same_model_and_resume_continues(tmp_path: Path) -> None:
    train_csv, _ = write_split(tmp_path / "small", per_combo=2)
    a, b = tmp_path / "a", tmp_path / "b"
    for out, epochs in ((a, "4"), (b, "2")):
        result = runner.invoke(app, ["train", str(train_csv), "--out", str(out), "--epochs", epochs, "--json"])
        assert result.exit_code == 0, result.output
    resumed = runner.invoke(app, ["train", str(train_csv), "--out", str(b), "--epochs", "4", "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert [h["epoch"] for h in json.loads(resumed.stdout)["history"]] == [1, 2, 3, 4]
    la, lb = torch.load(a / "last.pt", weights_only=False), torch.load(b / "last.pt", weights_only=False)
    for key, value in la["heads"].items():
        assert torch.equal(value, lb["heads"][key]), key  # interrupted + resumed == uninterrupted
    assert la["history"] == lb["history"]


def test_untrained_heads_are_the_base_model() -> None:
    from mmsearch.encoders.heads import Heads

    heads = Heads(feature_dim=10, dim=4, train_text=True)
    heads.set_feature_stats(torch.randn(20, 10))
    base = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    assert torch.allclose(heads.image_out(base, torch.randn(3, 10)), base)
    assert torch.allclose(heads.text_out(base), base)


@pytest.mark.slow
def test_unfreezing_the_last_cnn_stage_trains_it_and_loads_back(tmp_path: Path) -> None:
    train_csv, test_csv = write_split(tmp_path / "scenes", per_combo=2)
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["train", str(train_csv), "--out", str(out), "--epochs", "4", "--unfreeze-image", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["best_val"]["R@1"] > report["zero_shot_val"]["R@1"]
    assert json.loads((out / "config.json").read_text())["heads"]["unfreeze_image"] == 1
    from mmsearch.encoders import load_encoder

    base, trained = load_encoder("builtin"), load_encoder(str(out))
    frozen = dict(base.cnn.blocks[6].named_parameters())  # type: ignore[attr-defined]
    tuned = dict(trained.heads.trunk[0].named_parameters())  # type: ignore[attr-defined]
    assert any(not torch.equal(frozen[k], tuned[k]) for k in frozen)  # the stage itself was trained
    assert eval_r1(test_csv, str(out)) > eval_r1(test_csv, "builtin")
    bad = runner.invoke(app, ["train", str(train_csv), "--out", str(tmp_path / "x"), "--unfreeze-image", "9"])
    assert bad.exit_code == 1 and "between 1 and 7" in bad.stderr
    # resuming with other settings is a one-line error, not a traceback
    bad = runner.invoke(app, ["train", str(train_csv), "--out", str(out), "--epochs", "5", "--resume"])
    assert bad.exit_code == 1 and "written with other settings" in bad.stderr
