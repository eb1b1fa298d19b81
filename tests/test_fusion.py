"""The query layer: grammar, multi-vector fusion on real photos, filters and paging, explain."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import solid
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont
from real_photos import sources
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.errors import QueryError
from mmsearch.search import Query, QueryPart
from mmsearch.search.grammar import Term, format_terms, parse

runner = CliRunner()


def run(*args: str) -> list[dict]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- grammar ------------------------------------------------------------------------------------
def test_grammar_examples() -> None:
    assert parse("cat + sunset - water") == [Term("cat"), Term("sunset"), Term("water", negative=True)]
    assert parse("2:golden retriever + 0.5:beach") == [Term("golden retriever", 2.0), Term("beach", 0.5)]
    assert parse("t-shirt + c++") == [Term("t-shirt"), Term("c++")]  # no spaces around: part of the words
    assert parse("note: budget 2023") == [Term("note: budget 2023")]  # a colon after words is words
    assert parse("  a   dog ") == [Term("a dog")]
    for bad, message in (
        ("cat + ", "empty term at the end"),
        ("+ cat", "empty term at the start"),
        ("cat +  + dog", "between two operators"),
        ("0:cat", "must be a positive number"),
        ("2: ", "no words after the colon"),
        ("", "empty query"),
    ):
        with pytest.raises(QueryError, match=message):
            parse(bad)
    with pytest.raises(QueryError, match="must be a positive number"):
        parse("1e400:cat - dog")  # infinite


words = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8)
term_text = st.lists(words, min_size=1, max_size=4).map(" ".join).filter(lambda t: not t[0].isdigit())
weights = st.one_of(st.just(1.0), st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False))


@given(st.lists(st.tuples(term_text, weights, st.booleans()), min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_grammar_round_trips(raw: list[tuple[str, float, bool]]) -> None:
    terms = [Term(text, weight, negative and i > 0) for i, (text, weight, negative) in enumerate(raw)]
    assert parse(format_terms(terms)) == terms


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_is_a_one_line_query_error(text: str) -> None:
    try:
        terms = parse(text)
    except QueryError as e:
        assert "\n" not in str(e)
    else:
        assert terms and all(t.text.strip() and t.weight > 0 for t in terms)
        assert any(not t.negative for t in terms)


# -- fusion on real photos with the offline model --------------------------------------------------
def render_text(path: Path, photo: Path, lines: list[str]) -> None:
    """A real photo with a printed label on it, like a sign or a sticker."""
    im = Image.open(photo).convert("RGB").resize((640, 480))
    draw = ImageDraw.Draw(im)
    draw.rectangle((30, 30, 470, 60 + 70 * len(lines)), fill=(250, 250, 245))
    for i, line in enumerate(lines):
        draw.text((45, 45 + 70 * i), line, fill=(20, 20, 20), font=ImageFont.load_default(size=48))
    im.save(path)


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("library")
    for name, src in sources().items():
        if name not in ("page.png",):
            Image.open(src).convert("RGB").save(root / name)
    # a photo of a man with a camera, captioned as an invoice; a motorbike photo labelled with one (OCR)
    (root / "camera.txt").write_text("invoice 2023 for the new tripod")
    render_text(root / "sign-0041.png", sources()["motorcycle.png"], ["INVOICE 2023", "Total: 1,250.00"])
    index = tmp_path_factory.mktemp("library-index")
    result = runner.invoke(app, ["index", str(root), "--index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    return root, index


def own_vector_rank(index: Path, query: str, name: str) -> int:
    """Rank of ``name`` by its picture vector alone (what mmsearch did before fusion)."""
    with Engine.open(index) as eng:
        q = eng.embed_text([query])
        _, ids = eng.spaces.search("image", q, 100)
        paths = [eng.store.get_items([int(i)])[int(i)].path for i in ids[0]]
    return [Path(p).name for p in paths].index(name) + 1


def test_caption_and_ocr_text_find_an_invoice_the_picture_alone_ranks_low(photo_index) -> None:
    root, index = photo_index
    for name in ("camera.png", "sign-0041.png"):
        assert own_vector_rank(index, "invoice 2023", name) > 3, name
    top = [Path(h["path"]).name for h in run("query", "invoice 2023", "--index", str(index), "-k", "2")]
    assert set(top) == {"camera.png", "sign-0041.png"}
    hits = run("query", "invoice 2023", "--index", str(index), "-k", "2", "--explain")
    by_name = {Path(h["path"]).name: h for h in hits}
    spaces = {v["space"]: v for v in by_name["sign-0041.png"]["explain"][0]["vectors"]}
    assert "image.ocr" in spaces and spaces["image.ocr"]["contribution"] > spaces["image"]["contribution"]
    assert by_name["sign-0041.png"]["metadata"]["ocr_text"].startswith("INVOICE 2023")
    spaces = {v["space"]: v for v in by_name["camera.png"]["explain"][0]["vectors"]}
    assert spaces["image.caption"]["contribution"] > spaces["image"]["contribution"]
    for h in hits:  # the explanation adds up to the score
        total = sum(v["contribution"] for part in h["explain"] for v in part["vectors"])
        assert total == pytest.approx(h["score"], abs=1e-4)


def test_a_negative_term_demotes_what_it_names(photo_index) -> None:
    _, index = photo_index
    plain = [Path(h["path"]).name for h in run("query", "an animal", "--index", str(index), "-k", "20")]
    minus = [Path(h["path"]).name for h in run("query", "an animal - cat", "--index", str(index), "-k", "20")]
    assert plain[0] == "cat.png"
    assert minus.index("cat.png") > 3
    also = [
        Path(h["path"]).name for h in run("query", "an animal", "--minus", "cat", "--index", str(index), "-k", "20")
    ]
    assert also == minus


def test_rrf_sum_and_max_agree_when_it_is_unambiguous(photo_index) -> None:
    _, index = photo_index
    for query, expected in (
        ("a cat", "cat.png"),
        ("a cup of coffee", "coffee.png"),
        ("a motorcycle", "motorcycle.png"),
    ):
        for fusion in ("sum", "rrf", "max"):
            top = run("query", query, "--index", str(index), "--fusion", fusion, "-k", "1")[0]
            assert Path(top["path"]).name == expected, (query, fusion)


def test_weights_and_mixed_image_text_parts(photo_index) -> None:
    root, index = photo_index
    both = [Path(h["path"]).name for h in run("query", "a cat + a rocket", "--index", str(index), "-k", "2")]
    assert set(both) == {"cat.png", "rocket.jpg"}
    heavy = [Path(h["path"]).name for h in run("query", "4:a cat + a rocket", "--index", str(index), "-k", "1")]
    assert heavy == ["cat.png"]
    heavy = [Path(h["path"]).name for h in run("query", "a cat + 4:a rocket", "--index", str(index), "-k", "1")]
    assert heavy == ["rocket.jpg"]
    mixed = run("query", "--image", str(root / "coffee.png"), "a motorcycle", "--index", str(index), "-k", "2")
    assert {Path(h["path"]).name for h in mixed} == {"coffee.png", "motorcycle.png"}
    with Engine.open(index) as eng:  # the Python API takes the same query
        hits = eng.search(Query(parts=[QueryPart("text", "a cat")], k=1))
        assert Path(hits[0].path).name == "cat.png"


# -- filters and paging (fake encoder: fast and exact) ---------------------------------------------
@pytest.fixture
def colours(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    rng = np.random.default_rng(0)
    for i in range(40):
        folder = "a" if i % 3 else "b"
        rgb = tuple(int(v) for v in rng.integers(0, 255, 3))
        p = solid(root / folder / f"pic{i:02d}.png", rgb)
        os.utime(p, (1_600_000_000 + i * 86400, 1_600_000_000 + i * 86400))  # one a day from 2020-09-13
    shutil.copy(root / "a" / "pic01.png", root / "a" / "copy-of-pic01.png")
    shutil.copy(root / "a" / "pic01.png", root / "b" / "again-pic01.png")
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(root), "--model", "fake", "--index", str(idx), "-q"]).exit_code == 0
    return idx


def test_filters_apply_before_the_cut_and_paging_is_stable(colours: Path) -> None:
    idx = str(colours)
    hits = run("query", "red", "--index", idx, "--path", "*/b/*", "-k", "10")
    assert len(hits) == 10 and all("/b/" in h["path"] for h in hits)  # 15 match: exactly k come back
    assert len(run("query", "red", "--index", idx, "--path", "*/b/*", "-k", "100")) == 15
    assert {Path(h["path"]).suffix for h in run("query", "red", "--index", idx, "--path", "*.png", "-k", "50")} == {
        ".png"
    }
    full = [h["id"] for h in run("query", "red", "--index", idx, "-k", "12")]
    pages = [h["id"] for off in (0, 4, 8) for h in run("query", "red", "--index", idx, "-k", "4", "--offset", str(off))]
    assert pages == full and len(set(pages)) == 12
    assert [h["rank"] for h in run("query", "red", "--index", idx, "-k", "2", "--offset", "4")] == [5, 6]
    # dates: the files' mtimes, one per day from 2020-09-13 (i = 0 .. 39)
    dated = run("query", "red", "--index", idx, "--after", "2020-09-20", "--before", "2020-09-25", "-k", "50")
    assert sorted(Path(h["path"]).name for h in dated) == [f"pic{i:02d}.png" for i in range(7, 12)]
    scored = run("query", "red", "--index", idx, "-k", "50", "--min-score", "0.5")
    assert scored and all(h["score"] >= 0.5 for h in scored)
    assert len(scored) < len(run("query", "red", "--index", idx, "-k", "50"))


def test_dedupe_shows_copies_once(colours: Path) -> None:
    idx = str(colours)
    names = [
        Path(h["path"]).name for h in run("query", "--image", f"{idx}/../lib/a/pic01.png", "--index", idx, "-k", "5")
    ]
    assert {"pic01.png", "copy-of-pic01.png", "again-pic01.png"} <= set(names[:3])
    deduped = run("query", "--image", f"{idx}/../lib/a/pic01.png", "--index", idx, "-k", "5", "--dedupe")
    names = [Path(h["path"]).name for h in deduped]
    assert len(names) == 5 and len({"pic01.png", "copy-of-pic01.png", "again-pic01.png"} & set(names)) == 1


def test_bad_options_are_one_line_errors(colours: Path) -> None:
    for args, message in (
        (["red + "], "empty term"),
        (["red", "--fusion", "mean"], "unknown fusion"),
        (["red", "--after", "last week"], "not a date"),
        (["--minus", "red"], "at least one positive part"),
    ):
        result = runner.invoke(app, ["query", *args, "--index", str(colours)])
        assert result.exit_code == 1 and result.stderr.startswith("Error: ") and message in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_index_from_before_extra_vectors_gains_them_on_the_next_run(colours: Path) -> None:
    from sqlalchemy import text

    from mmsearch.store import Store

    store = Store(colours / Store.FILENAME)
    before = {s: store.ids(s).tolist() for s in ("image.name", "image.caption")}
    assert before["image.name"]  # "again-pic01.png" -> "again"
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM vectors WHERE space LIKE 'image.%'"))
    store.set_meta(item_vectors=1)
    store.close()
    for f in colours.glob("image.*.faiss*"):  # an index from then had no such files
        f.unlink()
    report = run("index", f"{colours}/../lib", "--index", str(colours))
    assert report["updated"] == 42 and report["added"] == 0 and report["reused"] == 42  # no model call for pictures
    with Engine.open(colours) as eng:
        assert eng.store.get_meta("item_vectors") == 2
        assert {s: eng.store.ids(s).tolist() for s in before} == before
        np.testing.assert_array_equal(eng.vector_ids("image.name"), eng.store.ids("image.name"))
    again = run("index", f"{colours}/../lib", "--index", str(colours))
    assert again["unchanged"] == 42 and again["updated"] == 0
