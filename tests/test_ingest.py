"""Indexing: incremental runs, reuse of vectors, pruning, formats, bad files."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, FakeEncoder, set_mtime, solid
from PIL import Image

from mmsearch import Engine
from mmsearch.encoders import load_encoder
from mmsearch.ingest import IngestHooks


def assert_consistent(engine: Engine) -> None:
    """FAISS ids == SQLite ids for every space, in memory and after a reload from disk."""
    for space in ("image", "text"):
        sqlite_ids = engine.store.ids(space)
        np.testing.assert_array_equal(engine.vector_ids(space), sqlite_ids)
    engine.spaces.save()
    fresh = Engine.open(engine.dir)
    try:
        for space in ("image", "text"):
            np.testing.assert_array_equal(fresh.vector_ids(space), fresh.store.ids(space))
            assert not fresh.spaces.dirty, "saved FAISS index was stale and had to be rebuilt"
    finally:
        fresh.close()


def paths_in(engine: Engine) -> set[str]:
    return {Path(p).name for p in engine.store.known_files()}


def test_first_run_indexes_images_and_notes_with_captions(photos: Path, tmp_path: Path) -> None:
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        report = eng.index([photos])
        assert report.added == 9 and not report.skipped
        assert eng.store.counts() == {"image": 7, "text": 2}
        # the sidecar is the beach photo's caption, not an item
        assert "beach.txt" not in paths_in(eng)
        beach = [
            i for i in eng.store.get_items(eng.store.ids("image").tolist()).values() if i.path.endswith("beach.png")
        ]
        assert beach[0].caption == "sand at the beach"
        assert (beach[0].width, beach[0].height) == (64, 48)
        assert_consistent(eng)


def test_second_run_embeds_nothing(photos: Path, tmp_path: Path) -> None:
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([photos])
    enc = load_encoder("fake")
    assert isinstance(enc, FakeEncoder)
    before = dict(enc.calls)
    with Engine.open(tmp_path / "idx") as eng:
        report = eng.index([photos])
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 9)
    assert enc.calls == before


def test_the_engine_takes_a_plain_string_path(photos: Path, tmp_path: Path) -> None:
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([str(photos)])
    eng = Engine(str(tmp_path / "idx"))  # as Python users write it (was a TypeError: str / str)
    try:
        assert eng.dir == tmp_path / "idx" and eng.store.counts() == {"image": 7, "text": 2}
    finally:
        eng.close()


def test_incremental_add_modify_delete_rename_duplicate(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    with Engine.open(idx, model="fake", create=True) as eng:
        eng.index([photos])
        ids_before = {Path(p).name: k.id for p, k in eng.store.known_files().items()}
    enc = load_encoder("fake")
    assert isinstance(enc, FakeEncoder)

    solid(photos / "new-green.jpg", "green")  # add
    solid(photos / "red.jpg", "blue")  # modify content: red.jpg is now blue
    set_mtime(photos / "red.jpg", 5)
    (photos / "black.jpg").unlink()  # delete
    (photos / "white.jpg").rename(photos / "white-renamed.jpg")  # rename
    shutil.copy(photos / "yellow.jpg", photos / "yellow-copy.jpg")  # duplicate
    (photos / "trip" / "beach.txt").write_text("a yellow umbrella at the beach")  # caption change
    set_mtime(photos / "trip" / "beach.txt", 5)

    calls = dict(enc.calls)
    with Engine.open(idx) as eng:
        report = eng.index([photos])
        names = paths_in(eng)
        assert "black.jpg" not in names and "white.jpg" not in names
        assert {"new-green.jpg", "white-renamed.jpg", "yellow-copy.jpg"} <= names
        assert report.removed == 2  # black.jpg, white.jpg
        assert report.added == 3 and report.updated == 2  # red.jpg, beach.png (caption)
        # only the new green and the changed red picture needed the model
        assert enc.calls["image"] - calls["image"] == 2
        assert report.reused == 3  # renamed, duplicate, beach.png with a new caption
        known = {Path(p).name: k.id for p, k in eng.store.known_files().items()}
        assert known["red.jpg"] == ids_before["red.jpg"]  # a changed file keeps its id
        assert known["white-renamed.jpg"] not in ids_before.values()  # ids are never reused
        top = eng.search(text="blue", k=2)
        assert {Path(h.path).name for h in top} == {"blue.jpg", "red.jpg"}
        beach = eng.store.get_items([known["beach.png"]])[known["beach.png"]]
        assert beach.caption == "a yellow umbrella at the beach"
        assert_consistent(eng)


def test_pruning_only_under_the_indexed_roots(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    solid(a / "red.jpg", "red")
    solid(b / "blue.jpg", "blue")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([a])
        eng.index([b])
        assert eng.store.counts() == {"image": 2}
        (a / "red.jpg").unlink()
        report = eng.index([b])
        assert report.removed == 0 and eng.store.counts() == {"image": 2}
        report = eng.index([a])
        assert report.removed == 1 and eng.store.counts() == {"image": 1}
        assert_consistent(eng)


def test_faiss_equals_sqlite_after_random_operations(tmp_path: Path) -> None:
    """A seeded random walk of file operations and re-index runs, checked after every run."""
    rng = random.Random(1234)
    root = tmp_path / "lib"
    root.mkdir()
    counter = 0
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        for _step in range(25):
            files = sorted(p for p in root.rglob("*") if p.is_file())
            for _ in range(rng.randint(1, 6)):
                op = rng.choice(["add", "add", "add_text", "modify", "delete", "rename", "duplicate"])
                counter += 1
                if op == "add" or not files:
                    solid(root / f"d{rng.randint(0, 2)}" / f"img{counter}.png", rng.choice(COLOURS))
                elif op == "add_text":
                    (root / f"note{counter}.txt").write_text(f"{rng.choice(COLOURS)} note {counter}")
                else:
                    victim = rng.choice(files)
                    if not victim.exists():
                        continue
                    if op == "modify" and victim.suffix == ".png":
                        solid(victim, rng.choice(COLOURS), size=(40 + counter % 7, 30))
                        set_mtime(victim, counter)
                    elif op == "delete":
                        victim.unlink()
                    elif op == "rename":
                        victim.rename(victim.with_name(f"r{counter}{victim.suffix}"))
                    elif op == "duplicate":
                        shutil.copy(victim, victim.with_name(f"c{counter}{victim.suffix}"))
            eng.index([root])
            on_disk = {str(p) for p in root.rglob("*") if p.is_file()}
            assert set(eng.store.known_files()) == on_disk
            for space in ("image", "text"):
                np.testing.assert_array_equal(eng.vector_ids(space), eng.store.ids(space))
        assert_consistent(eng)


def test_stale_faiss_file_is_rebuilt_from_sqlite(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    with Engine.open(idx, model="fake", create=True) as eng:
        eng.index([photos])
        expected = [h.path for h in eng.search(text="green", k=7)]
    # simulate a crash after a SQLite commit but before the FAISS save: an old FAISS file
    old = (idx / "image.faiss").read_bytes(), (idx / "image.faiss.json").read_text()
    solid(photos / "green2.jpg", "green")
    with Engine.open(idx) as eng:
        eng.index([photos])
        expected = [h.path for h in eng.search(text="green", k=8)]
    (idx / "image.faiss").write_bytes(old[0])
    (idx / "image.faiss.json").write_text(old[1])
    with Engine.open(idx) as eng:
        assert [h.path for h in eng.search(text="green", k=8)] == expected
        assert_consistent(eng)
    (idx / "image.faiss").write_bytes(b"garbage")  # unreadable: rebuilt as well
    with Engine.open(idx) as eng:
        assert [h.path for h in eng.search(text="green", k=8)] == expected


FORMATS = {
    "jpg": {},
    "jpeg": {},
    "png": {},
    "webp": {"quality": 90},
    "gif": {},
    "bmp": {},
    "tiff": {},
    "tif": {},
}


def test_every_supported_format_is_indexed_and_found(tmp_path: Path) -> None:
    root = tmp_path / "fmt"
    for i, (ext, opts) in enumerate(FORMATS.items()):
        solid(root / f"pic{i}.{ext}", COLOURS[i % 3], **opts)
    (root / "n.txt").write_text("plain text note")
    (root / "m.md").write_text("# markdown note")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        report = eng.index([root])
        assert not report.skipped
        assert eng.store.counts() == {"image": len(FORMATS), "text": 2}
        # each picture is found by its colour: the decoded pixels are right, not just "it ran"
        for i, ext in enumerate(FORMATS):
            hits = eng.search(text=COLOURS[i % 3], k=len(FORMATS))
            top = {Path(h.path).name for h in hits[: sum(1 for j in range(len(FORMATS)) if j % 3 == i % 3)]}
            assert f"pic{i}.{ext}" in top


def _bad_files(root: Path) -> dict[str, str]:
    """name -> a word the skip reason must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "zero.jpg").write_bytes(b"")
    good = solid(root / "tmp.jpg", "red", size=(300, 200))
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    good.unlink()
    png = solid(root / "tmp.png", "blue", size=(300, 200))
    pdata = png.read_bytes()
    (root / "truncated.png").write_bytes(pdata[: len(pdata) // 2])
    png.unlink()
    (root / "page.jpg").write_text("<!doctype html><html><body>not a picture</body></html>")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02binary\x00")
    (root / "empty.md").write_text("   \n")
    Image.new("1", (30000, 30000)).save(root / "bomb.png")  # 900 MP, a few KB on disk
    return {
        "zero.jpg": "empty",
        "truncated.jpg": "broken",
        "truncated.png": "broken",
        "page.jpg": "not a readable image",
        "binary.txt": "binary",
        "empty.md": "empty",
        "bomb.png": "too large",
    }


def test_bad_files_are_skipped_with_a_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    expected = _bad_files(root)
    solid(root / "fine.jpg", "green")
    # mislabelled but valid: a PNG named .jpg is indexed
    solid(root / "actually-png.jpg", "yellow", format="PNG")
    seen: list[tuple[str, str]] = []
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        report = eng.index([root], hooks=IngestHooks(skip=lambda p, r: seen.append((p, r))))
        skipped = {Path(p).name: r for p, r in report.skipped}
        assert set(skipped) == set(expected)
        for name, word in expected.items():
            assert word in skipped[name], (name, skipped[name])
        assert seen == report.skipped
        assert paths_in(eng) == {"fine.jpg", "actually-png.jpg"}
        assert eng.search(text="yellow", k=1)[0].path.endswith("actually-png.jpg")
        assert_consistent(eng)


def test_a_file_that_turns_bad_leaves_the_index(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    pic = solid(root / "a.jpg", "red")
    solid(root / "b.jpg", "blue")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([root])
        pic.write_bytes(pic.read_bytes()[:100])
        set_mtime(pic, 3)
        report = eng.index([root])
        assert [Path(p).name for p, _ in report.skipped] == ["a.jpg"]
        assert paths_in(eng) == {"b.jpg"}
        assert_consistent(eng)


def test_hidden_files_skipped_unless_asked(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    solid(root / "a.jpg", "red")
    solid(root / ".hidden.jpg", "red")
    solid(root / ".thumbs" / "t.jpg", "red")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([root])
        assert paths_in(eng) == {"a.jpg"}
        eng.index([root], include_hidden=True)
        assert paths_in(eng) == {"a.jpg", ".hidden.jpg", "t.jpg"}


def test_symlink_loops_do_not_hang_and_links_are_not_followed_by_default(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    solid(root / "sub" / "a.jpg", "red")
    solid(root / "other" / "b.jpg", "green")
    outside = solid(tmp_path / "outside" / "o.jpg", "blue")
    os.symlink(root, root / "sub" / "loop")
    os.symlink(outside, root / "link-out.jpg")
    os.symlink(root / "other" / "b.jpg", root / "link-in.jpg")
    os.symlink(tmp_path / "missing.jpg", root / "dangling.jpg")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([root])
        assert paths_in(eng) == {"a.jpg", "b.jpg"}
        report = eng.index([root], follow_symlinks=True)
        # followed links stay inside the indexed folders (issue 14): the link out is reported, not read
        assert paths_in(eng) == {"a.jpg", "b.jpg", "link-in.jpg"}
        reasons = {Path(p).name: r for p, r in report.skipped}
        assert set(reasons) == {"dangling.jpg", "link-out.jpg"}
        assert "outside the indexed folders" in reasons["link-out.jpg"]


def test_exif_rotated_photo_is_embedded_upright(tmp_path: Path) -> None:
    from mmsearch.modalities.image import decode_image

    # Upright: red top half, blue bottom half, 40 wide x 60 tall. Stored rotated 90 degrees
    # with EXIF orientation 6 (viewer must rotate 90 CW to display it upright).
    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:30] = PALETTE_RGB["red"]
    upright[30:] = PALETTE_RGB["blue"]
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 60 wide x 40 tall
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    decoded = decode_image(path.read_bytes())
    assert (decoded.width, decoded.height) == (40, 60)
    arr = np.asarray(decoded.image)
    assert arr.shape == (60, 40, 3)
    assert arr[5, 20, 0] > 150 and arr[5, 20, 2] < 100  # top is red
    assert arr[55, 20, 2] > 150 and arr[55, 20, 0] < 100  # bottom is blue


def test_large_jpeg_uses_draft_mode_and_sixteen_bit_and_palette_images_decode(tmp_path: Path) -> None:
    from mmsearch.modalities.image import DECODE_SIZE, decode_image

    big = solid(tmp_path / "big.jpg", "green", size=(4000, 3000))
    d = decode_image(big.read_bytes())
    assert (d.width, d.height) == (4000, 3000)
    assert max(d.image.size) <= 2 * DECODE_SIZE
    grey16 = tmp_path / "g16.png"
    Image.fromarray((np.ones((20, 20)) * 60000).astype(np.uint16)).save(grey16)
    assert np.asarray(decode_image(grey16.read_bytes()).image)[0, 0, 0] > 200
    pal = tmp_path / "p.gif"
    Image.new("RGB", (20, 20), (220, 20, 20)).convert("P").save(pal)
    assert np.asarray(decode_image(pal.read_bytes()).image)[0, 0, 0] > 150
    cmyk = tmp_path / "c.jpg"
    Image.new("RGB", (20, 20), (20, 40, 220)).convert("CMYK").save(cmyk)
    assert np.asarray(decode_image(cmyk.read_bytes()).image)[0, 0, 2] > 150


def test_index_a_single_file_and_interrupt_keeps_committed_batches(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    for i in range(10):
        solid(root / f"p{i:02d}.png", COLOURS[i % 6])
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([root / "p00.png"])
        assert paths_in(eng) == {"p00.png"}

    done = {"n": 0}

    def advance(n: int) -> None:
        done["n"] += n
        if done["n"] >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with Engine.open(tmp_path / "idx") as eng:
            eng.index([root], batch_size=2, hooks=IngestHooks(advance=advance))
    with Engine.open(tmp_path / "idx") as eng:
        kept = len(eng.store.known_files())
        assert 5 <= kept < 10  # committed batches survived the interrupt
        assert not eng.spaces.dirty  # the FAISS file was saved on the way out
        assert_consistent(eng)
        report = eng.index([root])
        assert report.added == 10 - kept and len(eng.store.known_files()) == 10


PALETTE_RGB = {"red": (220, 20, 20), "blue": (20, 40, 220)}


def test_unreadable_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, where chmod 000 does not stop reads: make opening refuse one file instead.
    import mmsearch.files
    from mmsearch.errors import MediaError

    root = tmp_path / "lib"
    locked = solid(root / "locked.jpg", "red")
    solid(root / "open.jpg", "blue")
    real_open = mmsearch.files.open_regular

    def guarded_open(file, *args, **kwargs):
        if str(file) == str(locked):
            raise MediaError("cannot read: Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(mmsearch.files, "open_regular", guarded_open)
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        report = eng.index([root])
        assert report.skipped == [(str(locked), "cannot read: Permission denied")]
        assert paths_in(eng) == {"open.jpg"}


def test_renamed_rotated_photo_keeps_its_upright_size(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    stored = Image.new("RGB", (60, 40), (200, 30, 30))  # shown upright as 40 wide x 60 tall
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(root / "a.jpg", exif=exif.tobytes())
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([root])
        shutil.copy(root / "a.jpg", root / "b.jpg")  # same bytes: vector reused, not decoded
        (root / "a.jpg").rename(root / "c.jpg")
        report = eng.index([root])
        assert report.reused == 2
        sizes = {
            Path(i.path).name: (i.width, i.height)
            for i in eng.store.get_items(eng.store.ids("image").tolist()).values()
        }
        assert sizes == {"b.jpg": (40, 60), "c.jpg": (40, 60)}


def test_ray_asked_for_without_ray_is_said_before_anything_even_with_nothing_to_do(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmsearch.errors import MmsearchError
    from mmsearch.ingest import IndexOptions, RayOptions, distributed

    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        eng.index([photos])  # indexed: a --ray re-run would send nothing to the cluster
        monkeypatch.setattr(distributed, "find_spec", lambda name: None)  # Ray not installed
        with pytest.raises(MmsearchError, match=r"--ray needs Ray: pip install 'mmsearch\[ray\]'"):
            eng.index([photos], IndexOptions(ray=RayOptions()))
