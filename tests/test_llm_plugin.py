"""The llm plugin, driven through llm itself: its Python API and its own CLI (`llm embed-multi`, `llm similar`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner as ClickRunner
from PIL import Image
from real_photos import sources
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app as cli_app
from mmsearch.encoders import load_encoder

llm = pytest.importorskip("llm")  # a dev dependency: never skipped in CI
PHOTOS = ("cat.png", "coffee.png", "rocket.jpg", "motorcycle.png")


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    return tmp_path / "llm"


def test_models_are_found_through_the_entry_point(llm_home: Path) -> None:
    ids = {m.model_id for m in llm.get_embedding_models()}
    assert {"mmsearch-builtin", "mmsearch-index"} <= ids


def test_builtin_embeds_as_mmsearch_does_and_llm_finds_the_cat(tmp_path: Path, llm_home: Path) -> None:
    from llm.cli import cli

    from mmsearch.modalities.image import decode_image

    model = llm.get_embedding_model("mmsearch-builtin")
    enc = load_encoder("builtin")
    cat = sources()["cat.png"].read_bytes()
    got = list(model.embed_multi(["a cat", cat, "a cup of coffee"]))
    want_text = enc.encode_text(["a cat", "a cup of coffee"])
    want_cat = enc.encode_image([decode_image(cat).image])[0]
    assert np.allclose(got[0], want_text[0], atol=1e-6) and np.allclose(got[2], want_text[1], atol=1e-6)
    assert np.allclose(got[1], want_cat, atol=1e-6)
    with pytest.raises(ValueError, match="not a picture"):
        model.embed(b"\x00not an image at all")

    # llm's own CLI: a folder of pictures embedded as binary content, then searched by text
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in PHOTOS:
        Image.open(sources()[name]).convert("RGB").save(folder / f"{Path(name).stem}.png")
    runner = ClickRunner()
    done = runner.invoke(
        cli, ["embed-multi", "pics", "--files", str(folder), "*.png", "--binary", "-m", "mmsearch-builtin"]
    )
    assert done.exit_code == 0, done.output
    found = runner.invoke(cli, ["similar", "pics", "-c", "a cat", "-n", "4"])
    assert found.exit_code == 0, found.output
    ranked = [json.loads(line)["id"] for line in found.output.splitlines()]
    assert ranked[0] == "cat.png" and len(ranked) == 4


def test_index_model_embeds_as_the_index_queries(tmp_path: Path, llm_home: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.open(sources()["rocket.jpg"]).convert("RGB").save(folder / "rocket.png")
    index = Path(os.environ["MMSEARCH_INDEX"])  # conftest points the default index into tmp_path
    assert CliRunner().invoke(cli_app, ["index", str(folder), "-q"]).exit_code == 0
    got = llm.get_embedding_model("mmsearch-index").embed("a rocket launch")
    with Engine.open(index) as eng:
        want = eng.embed("text", ["a rocket launch"], target="image")[0]
    assert np.allclose(got, want, atol=1e-6)


def test_index_model_without_an_index_is_one_clear_error(llm_home: Path) -> None:
    from llm.cli import cli

    done = ClickRunner().invoke(cli, ["embed", "-m", "mmsearch-index", "-c", "hello"])
    assert done.exit_code != 0
    assert "no index at" in str(done.exception or done.output)
