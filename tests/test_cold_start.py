"""Nothing computed twice across processes: what a query needs that an index run can store, it stores."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from conftest import DIM
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.search import REFERENCE_KEY
from mmsearch.search.fusion import REFERENCE_TEXTS

runner = CliRunner()


def ranking(eng: Engine, text: str) -> list[tuple[str, float]]:
    return [(Path(h.path).name, h.score) for h in eng.search(text, target="any", k=20)]


def test_an_index_run_stores_the_reference_vectors_and_queries_never_encode_them(
    photos: Path, tmp_path: Path, fake_model
) -> None:
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--index", str(idx), "--model", "fake", "-q"]).exit_code == 0
    enc = fake_model("fake-v1")  # a fresh encoder (same weights), counting from zero
    with Engine.open(idx) as eng:
        got = ranking(eng, "red")
        assert enc.calls["text"] == 1  # the query's own text: the 64 reference phrases came from the index
        stored = eng.store.get_meta(REFERENCE_KEY)
        assert stored["shape"] == [len(REFERENCE_TEXTS), enc.dim]
        # the same ranking, to the bit, as when they are computed
        eng.store.set_meta(**{REFERENCE_KEY: None})
    enc = fake_model("fake-v1")
    with Engine.open(idx) as eng:
        assert ranking(eng, "red") == got
        assert enc.calls["text"] == 1 + len(REFERENCE_TEXTS)  # missing: computed, as before
    assert got[0][0] in ("red.jpg", "red-note.txt")


def test_damaged_or_foreign_reference_vectors_are_computed_again(photos: Path, tmp_path: Path, fake_model) -> None:
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--index", str(idx), "--model", "fake", "-q"]).exit_code == 0
    with Engine.open(idx) as eng:
        good = eng.store.get_meta(REFERENCE_KEY)
        want = ranking(eng, "blue sea")
    bad = [
        {**good, "data": "!!! not base64"},
        {**good, "data": good["data"][: len(good["data"]) // 2]},  # truncated
        {**good, "model": "another-model"},  # another text tower's
        {**good, "texts": "0" * 16},  # other phrases
        "a string, not an object",
    ]
    nan = np.full((len(REFERENCE_TEXTS), DIM), np.nan, dtype="<f4").tobytes()
    bad.append({**good, "data": base64.b64encode(nan).decode()})
    for value in bad:
        with Engine.open(idx) as eng:
            eng.store.set_meta(**{REFERENCE_KEY: value})
            enc = fake_model("fake-v1")
            assert ranking(eng, "blue sea") == want, value
            assert enc.calls["text"] == 1 + len(REFERENCE_TEXTS)
