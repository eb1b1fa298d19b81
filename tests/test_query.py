"""Ranking through the Python API: text->image, image->image, text->text, image->text, any."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COLOURS, solid

from mmsearch import Engine, Hit
from mmsearch.errors import IndexNotFoundError, ModelMismatchError, QueryError


@pytest.fixture
def engine(photos: Path, tmp_path: Path):
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([photos])
        yield eng


def name(hit: Hit) -> str:
    return Path(hit.path).name


@pytest.mark.parametrize("colour", COLOURS)
def test_text_to_image_ranks_the_named_colour_first(engine: Engine, colour: str) -> None:
    hits = engine.search(text=f"a {colour} picture", k=3)
    assert name(hits[0]) == f"{colour}.jpg"
    assert all(h.modality == "image" for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score > hits[1].score >= hits[2].score


def test_image_to_image_finds_the_same_colour(engine: Engine, tmp_path: Path) -> None:
    query = solid(tmp_path / "q" / "query.png", "green", size=(50, 50))
    hits = engine.search(image=query, k=2)
    assert name(hits[0]) == "green.jpg"
    assert hits[0].metadata["width"] == 64


def test_text_to_text_and_image_to_text(engine: Engine, tmp_path: Path) -> None:
    hits = engine.search(text="blue sky", target="text", k=2)
    assert [name(h) for h in hits] == ["blue.md", "red-note.txt"]
    assert hits[0].metadata["excerpt"].startswith("# Sea")
    query = solid(tmp_path / "q" / "red.png", "red")
    assert name(engine.search(image=query, target="text", k=1)[0]) == "red-note.txt"


def test_target_any_mixes_modalities_without_repeats(engine: Engine) -> None:
    hits = engine.search(text="red", target="any", k=20)
    assert len(hits) == 9 and len({h.id for h in hits}) == 9
    assert {h.modality for h in hits} == {"image", "text"}
    assert {name(h) for h in hits[:2]} == {"red.jpg", "red-note.txt"}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_k_larger_than_the_collection_and_audio_target(engine: Engine) -> None:
    assert len(engine.search(text="red", k=100)) == 7
    # a text model indexes recordings through their speech, so audio is a valid target; none indexed here
    assert engine.search(text="red", target="audio") == []
    with pytest.raises(QueryError, match="unknown target"):
        engine.search(text="red", target="hologram")


def test_bad_queries_raise_typed_errors(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="nothing to search for"):
        engine.search()
    with pytest.raises(QueryError, match="unknown target"):
        engine.search(text="x", target="hologram")
    bad = tmp_path / "notimage.jpg"
    bad.write_text("hello")
    with pytest.raises(QueryError, match="cannot use .* as a query image"):
        engine.search(image=bad)
    with pytest.raises(QueryError, match="cannot use"):
        engine.search(image=tmp_path / "missing.jpg")


def test_embed_api_matches_the_search_space(engine: Engine, photos: Path) -> None:
    text = engine.embed_text(["red"])
    img = engine.embed_image([photos / "red.jpg", photos / "blue.jpg"])
    assert text.shape == (1, 32) and img.shape == (2, 32) and img.dtype.name == "float32"
    assert (img @ text.T)[0, 0] > (img @ text.T)[1, 0]


def test_query_uses_the_recorded_model_and_refuses_a_mismatch(photos: Path, tmp_path: Path, fake_model) -> None:
    idx = tmp_path / "idx"
    with Engine.open(idx, model="fake", create=True) as eng:
        eng.index([photos])
    with Engine.open(idx) as eng:  # no --model: the recorded one is used
        assert eng.model_name == "fake"
        assert name(eng.search(text="red", k=1)[0]) == "red.jpg"
    with pytest.raises(ModelMismatchError, match="built with model 'fake', not 'fake2'"):
        Engine.open(idx, model="fake2", create=True)
    fake_model("fake-v2")  # same name, other weights
    with Engine.open(idx) as eng, pytest.raises(ModelMismatchError, match="different weights"):
        eng.search(text="red")


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="run `mmsearch index FOLDER` first"):
        Engine.open(tmp_path / "nothing-here")
