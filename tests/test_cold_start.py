"""Nothing computed twice across processes: what a query needs that an index run can store, it stores."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from conftest import DIM, solid
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.errors import MmsearchError
from mmsearch.ingest import IngestHooks
from mmsearch.search import REFERENCE_KEY
from mmsearch.search.fusion import REFERENCE_TEXTS
from mmsearch.vector_index import VectorIndex, load_recipes

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


def test_queries_map_faiss_files_and_an_index_run_in_the_same_process_still_writes(
    photos: Path, tmp_path: Path
) -> None:
    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--index", str(idx), "--model", "fake", "-q"]).exit_code == 0
    with Engine.open(idx) as eng:
        got = ranking(eng, "green")
        assert eng.spaces.get("image").mapped  # opened, not read
    recipes = load_recipes()
    read, _ = VectorIndex.load(idx / "image.faiss", recipes, "image")
    mapped, _ = VectorIndex.load(idx / "image.faiss", recipes, "image", mapped=True)
    q = np.eye(read.dim, dtype=np.float32)[:4]
    assert np.array_equal(read.search(q, 5)[1], mapped.search(q, 5)[1]) and np.array_equal(read.ids(), mapped.ids())
    with pytest.raises(MmsearchError, match="read-only"):
        mapped.add(np.array([10**6]), q[:1])  # a typed error, never FAISS aborting the process
    # search (mapped), then index more in the same Engine: the run reads its indexes into memory
    with Engine.open(idx) as eng:
        assert ranking(eng, "green") == got
        solid(photos / "more" / "green2.png", "green")
        eng.index([photos])
        assert not eng.spaces.get("image").mapped
        names = [name for name, _ in ranking(eng, "green")]
        assert {"green.jpg", "green2.png"} <= set(names[:3])
    with Engine.open(idx) as eng:  # and the next reader maps the file the run saved
        assert "green2.png" in [name for name, _ in ranking(eng, "green")][:3]
        assert eng.spaces.get("image").mapped


def test_a_mapped_ivf_index_searches_as_the_read_one(tmp_path: Path) -> None:
    recipes = load_recipes()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, 3001, dtype=np.int64)
    vi = VectorIndex.build(24, recipes["ivf"], [(ids, x)], 3000, x)
    path = tmp_path / "image.faiss"
    vi.write_temp(path, 7, "image").commit()
    read, gen = VectorIndex.load(path, recipes, "image")
    mapped, gen2 = VectorIndex.load(path, recipes, "image", mapped=True)
    assert gen == gen2 == 7 and mapped.mapped and read.recipe.is_ivf
    D1, I1 = read.search(x[:20], 10)
    D2, I2 = mapped.search(x[:20], 10)
    assert np.array_equal(I1, I2) and np.allclose(D1, D2) and (I1[:, 0] == ids[:20]).all()
    assert np.array_equal(read.ids(), mapped.ids())
    with pytest.raises(MmsearchError, match="read-only"):
        mapped.remove([1])


def _store_with(path: Path, rows: list[tuple[int, str, np.ndarray]]):
    from mmsearch.store import Store

    store = Store(path)
    with store.engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        cur.executemany(
            "INSERT INTO items (id, path, modality, size, mtime_ns, content_hash, status, indexed_at) "
            "VALUES (?, ?, 'image', 1, 1, ?, 'ok', 0)",
            [(i, f"/p/{h}.jpg", h) for i, h, _ in rows],
        )
        cur.executemany(
            "INSERT INTO vectors (item_id, space, data) VALUES (?, 'image', ?)", [(i, v.tobytes()) for i, _, v in rows]
        )
        # a second space on a few items only: its sample holds those alone
        cur.executemany(
            "INSERT INTO vectors (item_id, space, data) VALUES (?, 'caption', ?)",
            [(i, v.tobytes()) for i, _, v in rows[:7]],
        )
    return store


def test_the_calibration_sample_is_chosen_by_content_and_bounded(tmp_path: Path) -> None:
    """The n items with the smallest content hashes, whatever order (and ids) they were written in."""
    import hashlib

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 8)).astype(np.float32)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3000)]
    rows = [(i + 1, hashes[i], vecs[i]) for i in range(3000)]
    order = rng.permutation(3000)
    shuffled = [(j + 1, hashes[i], vecs[i]) for j, i in enumerate(order)]  # other ids, other order
    a, b = _store_with(tmp_path / "a.sqlite3", rows), _store_with(tmp_path / "b.sqlite3", shuffled)
    sa, sb = a.sample_vectors("image", n=1000), b.sample_vectors("image", n=1000)
    want = vecs[np.argsort(hashes)[:1000]]
    np.testing.assert_array_equal(sa, want)
    np.testing.assert_array_equal(sb, want)
    assert a.sample_vectors("image", n=5000).shape == (3000, 8)  # fewer than n: all of them
    assert a.sample_vectors("caption", n=1000).shape == (7, 8)
    assert a.sample_vectors("absent").shape == (0, 0)
    a.close()
    b.close()


def test_a_run_with_nothing_to_do_loads_no_model_and_only_maps_faiss_files(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmsearch.engine
    import mmsearch.spaceset

    idx = tmp_path / "idx"
    with Engine.open(idx, model="fake", create=True) as eng:
        eng.index([photos])
    loads: list[str] = []
    real_towers, real_get = mmsearch.engine.load_towers, mmsearch.spaceset.SpaceSet.get
    monkeypatch.setattr(mmsearch.engine, "load_towers", lambda *a, **k: loads.append("model") or real_towers(*a, **k))

    def get(self, name, mapped=None):  # type: ignore[no-untyped-def]
        loads.append("faiss" if not mapped else "faiss mapped")
        return real_get(self, name, mapped)

    monkeypatch.setattr(mmsearch.spaceset.SpaceSet, "get", get)
    called: list[str] = []
    hooks = IngestHooks(load=lambda: called.append("load"))
    with Engine.open(idx) as eng:
        report = eng.index([photos], hooks=hooks)
        assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 9)
        assert "model" not in loads and called == []  # no model loaded, and the CLI's spinner never shown
        assert set(loads) == {"faiss mapped"}  # FAISS files only mapped, to check them against SQLite
    # any change, and the run loads what it needs and does the work as before
    solid(photos / "new.jpg", "red", size=(70, 40))
    (photos / "notes" / "blue.md").unlink()
    with Engine.open(idx) as eng:
        report = eng.index([photos], hooks=hooks)
        assert (report.added, report.removed, report.unchanged) == (1, 1, 8)
        assert "model" in loads and "faiss" in loads and called == ["load"]
        assert Path(eng.search("red", k=1)[0].path).name in {"red.jpg", "new.jpg"}
    loads.clear()
    # a file not indexed yet (a beep: no speech for this fake model's transcriber) is work only the model can
    # judge: it loads, and skips it, as every run did
    import wave

    with wave.open(str(photos / "beep.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\x00\x10" * 800)
    with Engine.open(idx) as eng:
        report = eng.index([photos])
        assert report.unchanged == 9 and [Path(p).name for p, _ in report.skipped] == ["beep.wav"]
        assert "model" in loads


def test_a_no_op_cli_index_run_imports_no_model_runtime(photos: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    idx = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(photos), "--index", str(idx), "--model", "builtin", "-q"]).exit_code == 0
    code = (
        "import sys\nsys.argv = ['mmsearch', 'index', sys.argv[1], '--index', sys.argv[2], '--json']\n"
        "from mmsearch.cli import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
        "mods = ('torch', 'onnxruntime', 'open_clip', 'transformers', 'rapidocr_onnxruntime')\n"
        "print('IMPORTED', [m for m in mods if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(photos), str(idx)], capture_output=True, text=True,
                          env=os.environ, timeout=300)  # fmt: skip
    assert json.loads(done.stdout)["unchanged"] == 9, done.stderr[-2000:]
    assert "IMPORTED []" in done.stderr
