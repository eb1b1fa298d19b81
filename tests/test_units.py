"""The pieces on their own: the Space type, calibration and fusion, the walk, the ingest stages, the search
stages. Each is called through its own API, with hand-made inputs whose answers are known."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEncoder, solid

from mmsearch.encoders import l2_normalize
from mmsearch.encoders.towers import plain
from mmsearch.errors import QueryError
from mmsearch.modalities import CAPTION, NAME, OCR, Space, all_modalities, get, indexable, space
from mmsearch.search import Query, QueryPart
from mmsearch.search.fusion import DEFAULT_SPREAD, MIN_SAMPLE, Calibration, Scored, fuse


def unit(*xs: float) -> np.ndarray:
    return l2_normalize(np.array([xs], dtype=np.float32))[0]


# -- Space ---------------------------------------------------------------------------------------------------
def test_spaces_name_themselves_and_carry_their_modality_s_weights() -> None:
    own, cap = Space("image"), Space("image", CAPTION, 1.0)
    assert (own.name, own.own, own.text_derived) == ("image", True, False)
    assert (cap.name, cap.own, cap.text_derived) == ("image.caption", False, True)
    assert space("image.name") == Space("image", NAME, 0.5)
    assert space("image.ocr") == Space("image", OCR, 1.0)
    assert space("audio") == Space("audio")
    assert space("video.frame") == Space("video", "frame")  # a space of a modality not registered: weight 1
    assert [m.name for m in all_modalities()][:3] == ["image", "text", "audio"]
    for m in all_modalities():  # every modality lists its own space first, then its extra kinds
        assert m.spaces[0].own and all(s.modality == m.name for s in m.spaces)


# -- calibration and fusion ------------------------------------------------------------------------------------
def test_calibration_is_the_spread_of_a_sample_and_shared_by_text_derived_spaces() -> None:
    rng = np.random.default_rng(0)
    sample = l2_normalize(rng.standard_normal((100, 4)).astype(np.float32))
    population = l2_normalize(rng.standard_normal((30, 4)).astype(np.float32))
    cal = Calibration({"image": sample, "tiny": sample[: MIN_SAMPLE - 1]}, population)
    q = unit(1, 0, 0, 0)
    mu, sd = cal.stats(0, Space("image"), q)
    assert mu == pytest.approx(float((sample @ q).mean()), abs=1e-6)
    assert sd == pytest.approx(float((sample @ q).std()), abs=1e-6)
    assert cal.stats(0, Space("tiny"), q)[1] == DEFAULT_SPREAD  # too few to measure a spread
    assert cal.stats(0, Space("nothing"), q) == (0.0, DEFAULT_SPREAD)
    caption, name = cal.stats(0, Space("image", CAPTION), q), cal.stats(0, Space("audio", NAME), q)
    assert caption == name == pytest.approx(((population @ q).mean(), (population @ q).std()), abs=1e-6)


def test_fusion_adds_extra_vectors_by_how_unusually_well_they_match() -> None:
    q = unit(1, 0, 0, 0)
    vectors = {
        (1, "image"): unit(0.9, 0.1, 0, 0),  # a close picture, no caption
        (2, "image"): unit(0.5, 0.5, 0, 0),  # a further picture with a matching caption
        (2, "image.caption"): unit(1, 0, 0, 0),
    }
    spaces_for = {"image": [Space("image"), Space("image", CAPTION, 1.0)]}
    rng = np.random.default_rng(1)
    sample = l2_normalize(rng.standard_normal((50, 4)).astype(np.float32))
    cal = Calibration({"image": sample}, sample)
    query = Query(parts=[QueryPart("text", "x")], explain=True)
    ranked = fuse(query, each(q[None]), [1, 2], {1: "image", 2: "image"}, vectors, spaces_for, cal)
    by_id = {r.id: r for r in ranked}
    assert by_id[1].score == pytest.approx(float(vectors[(1, "image")] @ q))  # nothing extra: the plain cosine
    mu_own, sd_own = cal.stats(0, Space("image"), q)
    mu, sd = cal.stats(0, Space("image", CAPTION), q)
    z = (1.0 - mu) / sd
    assert by_id[2].score == pytest.approx(float(vectors[(2, "image")] @ q) + sd_own * z, rel=1e-5)
    assert [r.id for r in ranked] == [2, 1]  # the caption lifted the further picture
    for r in ranked:  # explain's contributions add up to the score
        total = sum(v["contribution"] for part in r.explain for v in part["vectors"])  # type: ignore[union-attr]
        assert total == pytest.approx(r.score, abs=1e-6)


def each(qvecs: np.ndarray):  # noqa: ANN201 - every part's vector, the same in every space
    return lambda part, space: qvecs[part]


def test_negative_parts_subtract_and_weights_scale() -> None:
    a, b = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    vectors = {(1, "text"): unit(1, 1, 0, 0), (2, "text"): unit(1, 0, 0, 0)}
    cal = Calibration({}, np.zeros((0, 4), np.float32))
    parts = [QueryPart("text", "a", 2.0), QueryPart("text", "b", 1.0, negative=True)]
    ranked = fuse(Query(parts=parts), each(np.stack([a, b])), [1, 2], {1: "text", 2: "text"}, vectors, {}, cal)
    s = {r.id: r.score for r in ranked}
    assert s[2] == pytest.approx(1.0)  # (2 * 1 - 1 * 0) / 2
    assert s[1] == pytest.approx((2 * float(vectors[(1, "text")] @ a) - float(vectors[(1, "text")] @ b)) / 2)


@pytest.mark.parametrize("fusion", ["rrf", "max"])
def test_the_other_fusions_rank_the_obvious_case_alike(fusion: str) -> None:
    q = unit(1, 0, 0, 0)
    vectors = {(i, "image"): unit(1, i, 0, 0) for i in range(1, 5)}
    cal = Calibration({"image": np.stack(list(vectors.values()))}, np.zeros((0, 4), np.float32))
    query = Query(parts=[QueryPart("text", "x")], fusion=fusion)
    ranked = fuse(query, each(q[None]), [4, 2, 3, 1], dict.fromkeys(range(1, 5), "image"), vectors,
                  {"image": [Space("image")]}, cal)  # fmt: skip
    assert [r.id for r in ranked] == [1, 2, 3, 4]


# -- the walk --------------------------------------------------------------------------------------------------
def test_the_walk_pairs_captions_counts_what_the_model_cannot_embed_and_skips_hidden(tmp_path: Path) -> None:
    from mmsearch.ingest import walk

    root = tmp_path / "lib"
    solid(root / "a.jpg", "red")
    (root / "a.txt").write_text("caption one")
    (root / "a.jpg.txt").write_text("caption two")  # the more specific name wins
    solid(root / "b.png", "blue")
    (root / "b.txt").write_text("b's caption")
    (root / "note.md").write_text("a note")
    (root / "plain.txt").write_text("another note")
    (root / ".hidden.txt").write_text("hidden")
    (root / "sound.wav").write_bytes(b"RIFF")
    skipped: list[tuple[str, str]] = []
    text_only = [get("text")]
    found = walk([root], [get("image"), get("text")], lambda p, r: skipped.append((p, r)), known=[get("audio")])
    by_name = {Path(c.path).name: c for c in found.candidates}
    assert set(by_name) == {"a.jpg", "b.png", "note.md", "plain.txt", "a.txt"}  # a.txt lost to a.jpg.txt: a note
    assert Path(by_name["a.jpg"].caption_path or "").name == "a.jpg.txt"
    assert Path(by_name["b.png"].caption_path or "").name == "b.txt"
    assert found.ignored == {"audio": 1} and not skipped
    notes = walk([root], text_only, lambda p, r: None, known=[get("image"), get("audio")])
    assert {Path(c.path).name for c in notes.candidates} == {"note.md", "plain.txt", "a.txt"}  # captions are not notes
    assert notes.ignored == {"image": 2, "audio": 1}
    single = walk([root / "b.png"], [get("image")], lambda p, r: None)
    assert [(Path(c.path).name, Path(c.caption_path or "").name) for c in single.candidates] == [("b.png", "b.txt")]


# -- the ingest stages ------------------------------------------------------------------------------------------
class RecordingSink:
    def __init__(self) -> None:
        self.added: dict[str, list[int]] = {}
        self.removed: dict[str, list[int]] = {}

    def add(self, space: str, ids, vectors) -> None:
        assert vectors.shape[0] == len(ids)
        self.added.setdefault(space, []).extend(int(i) for i in ids)

    def remove(self, space: str, ids) -> None:
        self.removed.setdefault(space, []).extend(int(i) for i in ids)


def test_the_ingest_stages_read_embed_and_write_one_batch(tmp_path: Path) -> None:
    from mmsearch.files import open_regular
    from mmsearch.ingest.decode import Decoder
    from mmsearch.ingest.embed import embed_batch
    from mmsearch.ingest.walk import walk
    from mmsearch.ingest.write import write
    from mmsearch.modalities import ReadJob
    from mmsearch.store import Store

    root = tmp_path / "golden_retriever"
    solid(root / "golden_retriever_beach.jpg", "yellow")
    (root / "golden_retriever_beach.txt").write_text("a red ball")
    solid(root / "IMG_2041.jpg", "blue")
    store = Store(tmp_path / "s.sqlite3")
    enc = FakeEncoder()
    image = get("image")
    found = walk([root], [image], lambda p, r: None)
    opener = lambda p: open_regular(p, roots=[str(root)])  # noqa: E731
    job = ReadJob(lambda h: store.reusable(h, "image"), opener, 512)
    decoded = [got for _, got in Decoder({"image": image}, {"image": job}, opener, 2, 4).run(found.candidates)]
    assert all(x.payload is not None and x.vector is None and len(x.content_hash) == 40 for x in decoded)
    embed_batch(image, decoded, plain(enc), job)
    by_name = {Path(x.path).name: x for x in decoded}
    beach = by_name["golden_retriever_beach.jpg"]
    assert beach.caption == "a red ball" and set(beach.extras) == {"image.caption", "image.name"}
    np.testing.assert_allclose(beach.extras["image.name"], enc.encode_text(["golden retriever beach"])[0])
    assert set(by_name["IMG_2041.jpg"].extras) == set()  # a camera name gives no words
    sink = RecordingSink()
    assert write(store, sink, decoded, {}) == (2, 0)
    assert sorted(sink.added) == ["image", "image.caption", "image.name"] and len(sink.added["image"]) == 2
    again = Decoder({"image": image}, {"image": job}, opener, 1, 1).read(found.candidates[0])
    assert again.vector is not None and again.payload is None  # the same bytes: reused, not decoded
    store.close()


# -- the search stages -----------------------------------------------------------------------------------------
def test_targets_default_to_what_leads_the_query_and_any_lists_every_indexable_kind() -> None:
    from mmsearch.search.stages import resolve_targets

    enc = plain(FakeEncoder())
    assert [m.name for m in indexable(enc)] == ["image", "text", "audio", "video"]  # audio: through speech
    assert resolve_targets(None, enc) == ["image"]
    assert resolve_targets(None, enc, "audio") == ["audio"]
    assert resolve_targets("any", enc) == ["image", "text", "audio", "video"]
    assert resolve_targets("TEXT", enc) == ["text"]
    with pytest.raises(QueryError, match="unknown target 'film': choose one of image, text, audio, video, any"):
        resolve_targets("film", enc)
    assert Query(parts=[QueryPart("image", "x.jpg"), QueryPart("audio", "y.wav")]).lead_kind() == "image"
    assert Query(parts=[QueryPart("audio", "y.wav"), QueryPart("text", "t")]).lead_kind() is None


def test_refine_keeps_the_best_of_copies_and_near_duplicates(tmp_path: Path) -> None:
    from mmsearch.search.stages import refine
    from mmsearch.store import ItemRecord, Store

    store = Store(tmp_path / "s.sqlite3")
    v, w = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    near = unit(1, 0.01, 0, 0)
    recs = [
        ItemRecord("/a.jpg", "image", 1, 1, "same", v),
        ItemRecord("/b.jpg", "image", 1, 1, "same", w),  # the same bytes as a.jpg
        ItemRecord("/c.jpg", "image", 1, 1, "c", near),  # all but the same picture as a.jpg
        ItemRecord("/d.jpg", "image", 1, 1, "d", w),
    ]
    ids = store.write_batch(recs, {})
    ranked = [Scored(i, 1.0 - n / 10) for n, i in enumerate(ids)]
    vectors = {(i, "image"): r.vector for i, r in zip(ids, recs, strict=True)}
    modality_of = dict.fromkeys(ids, "image")
    kept = refine(Query(parts=[QueryPart("text", "x")], dedupe=True), ranked, modality_of, vectors, store)
    assert [r.id for r in kept] == [ids[0], ids[3]]
    cut = refine(Query(parts=[QueryPart("text", "x")], min_score=0.85), ranked, modality_of, vectors, store)
    assert [r.id for r in cut] == ids[:2]
    store.close()


def test_best_match_is_the_segment_nearest_the_query(tmp_path: Path) -> None:
    from mmsearch.search.stages import best_match
    from mmsearch.store import ItemRecord, SegmentRecord, Store

    store = Store(tmp_path / "s.sqlite3")
    segs = [
        SegmentRecord(0.0, 4.0, "speech", unit(0, 1, 0, 0), "the weather"),
        SegmentRecord(4.0, 9.5, "speech", unit(1, 0, 0, 0), "the budget"),
        SegmentRecord(9.5, 12.0, "sound", unit(1, 0.2, 0, 0)),
    ]
    (item,) = store.write_batch([ItemRecord("/r.ogg", "audio", 1, 1, "h", unit(1, 1, 0, 0), segments=segs)], {})
    match = best_match(store, item, unit(1, 0, 0, 0))["match"]
    assert match == {"start": 4.0, "end": 9.5, "kind": "speech", "text": "the budget", "score": 1.0}
    assert best_match(store, 999, unit(1, 0, 0, 0)) == {}
    store.close()


def test_a_missing_file_is_no_item_and_files_outside_the_roots_are_refused(tmp_path: Path) -> None:
    from mmsearch.errors import MediaError
    from mmsearch.files import open_regular

    inside, outside = tmp_path / "in", tmp_path / "out"
    solid(outside / "x.png", "red")
    inside.mkdir()
    os.symlink(outside / "x.png", inside / "link.png")
    with pytest.raises(MediaError, match="symbolic link"):
        open_regular(inside / "link.png", roots=[str(inside)])
    with pytest.raises(MediaError, match="outside the indexed folders"):
        open_regular(inside / "link.png", follow_symlinks=True, roots=[str(inside)])
    with open_regular(inside / "link.png", follow_symlinks=True, roots=[str(inside), str(outside)]) as f:
        assert f.read(4) == b"\x89PNG"
    with pytest.raises(MediaError, match="cannot read"):
        open_regular(inside / "missing.png")
