"""Issue 14, the indexing side: one odd file never stops a run, nothing outside the tree is read, memory and
time stay bounded, damaged caches repair themselves, and what reaches a terminal cannot drive it.

(The server's side is in test_server_hardening.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import solid
from PIL import Image
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app

runner = CliRunner()
HERE = Path(__file__).parent
FAKE_CLI = [sys.executable, str(HERE / "fake_cli.py")]
SABOTAGE_CLI = [sys.executable, str(HERE / "sabotage_cli.py")]


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _peak_rss_mib(cmd: list[str], timeout: float = 300, **kw) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd`` in a child and return it with its peak RSS.

    Read from ``VmHWM`` in /proc (this process's memory alone): ``ru_maxrss`` would report at least the
    pytest process's own peak, which Linux carries over a fork and exec.
    """
    code = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM'))\n"
        "    print('PEAK_KB', hwm.split()[1], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *cmd[1:]], capture_output=True, text=True, timeout=timeout, **kw)
    kb = int(next(ln.split()[1] for ln in done.stderr.splitlines() if ln.startswith("PEAK_KB")))
    return done, kb / 1024


def _skips(stderr: str) -> dict[str, str]:
    out = {}
    for line in stderr.splitlines():
        if line.startswith("skipping "):
            path, reason = line[len("skipping ") :].split(": ", 1)
            out[Path(path).name] = reason
    return out


# -- 1. stat values SQLite cannot hold -----------------------------------------------------------------
def test_a_file_dated_after_2262_is_indexed_and_stays_unchanged(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    far = solid(lib / "future.jpg", "red")
    (lib / "future.txt").write_text("a caption from the future")  # the caption's signature too
    note = lib / "old.txt"
    note.write_text("a note written long ago")
    solid(lib / "plain.jpg", "blue")
    year_2300 = 10_413_792_000 * 10**9  # ns: over 2**63
    for p in (far, lib / "future.txt"):
        os.utime(p, ns=(year_2300, year_2300))
    os.utime(note, ns=(-(2**63) - 10**9, -(2**63) - 10**9))  # before 1677: under -2**63
    first = runner.invoke(app, ["index", str(lib), "--model", "fake", "--index", str(idx), "--json"])
    assert first.exit_code == 0, (first.output, first.exception)
    assert json.loads(first.stdout)["added"] == 3
    again = runner.invoke(app, ["index", str(lib), "--index", str(idx), "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["unchanged"] == 3 and report["added"] == report["updated"] == 0
    hits = runner.invoke(app, ["query", "red", "--index", str(idx), "--json", "-k", "1"])
    assert hits.exit_code == 0 and json.loads(hits.stdout)[0]["path"] == str(far)


# -- 2. bounded memory for every kind ----------------------------------------------------------------
def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def test_multi_gigabyte_notes_and_pictures_are_read_with_bounded_memory(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    words = b"the quarterly budget meeting moved to thursday " * 25_000  # 1.2 MB of text, then zeros
    _sparse(lib / "huge-note.txt", 6 << 30, words)  # 6 GB: a MemoryError before
    _sparse(lib / "zeros.txt", 2 << 30)  # 2 GB of nothing
    _sparse(lib / "huge.jpg", 2 << 30)  # 2 GB named .jpg: 168 s before
    _sparse(lib / "header-only.png", 200 << 20, b"\x89PNG\r\n\x1a\n")  # under the size cap, not a picture
    solid(lib / "fine.jpg", "red")
    started = time.monotonic()
    done, rss = _peak_rss_mib([*FAKE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--json"])
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-2000:]
    report = json.loads(done.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"zeros.txt", "huge.jpg", "header-only.png"}, reasons
    assert "binary" in reasons["zeros.txt"]
    assert "too large for a picture" in reasons["huge.jpg"]
    assert "not a readable image" in reasons["header-only.png"] or "broken image" in reasons["header-only.png"]
    assert report["added"] == 2
    with Engine.open(idx) as eng:
        hit = eng.search(text="thursday budget", target="text", k=1)[0]
        assert hit.path.endswith("huge-note.txt") and "quarterly budget" in hit.metadata["excerpt"]
    assert rss < 600, f"peak RSS {rss:.0f} MiB"  # the first MiB of a note is read, nothing more
    print(f"\n6 GB + 2 GB notes, 2 GB + 200 MB pictures: peak RSS {rss:.0f} MiB, {took:.1f} s")


# -- 3 and 4. swaps between the walk and the read ---------------------------------------------------------
def test_files_swapped_for_pipes_devices_and_links_after_the_walk_are_skipped(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for name in ("pipe.jpg", "zero.jpg", "passwd.txt", "captioned.jpg", "outside.png", "linked-dir/in.png"):
        if name.endswith(".txt"):
            (lib / name).parent.mkdir(parents=True, exist_ok=True)
            (lib / name).write_text("an ordinary note")
        else:
            solid(lib / name, "green")
    (lib / "captioned.txt").write_text("a caption")
    secret = tmp_path / "secret"
    solid(secret / "outside.png", "red")
    (secret / "in.png").write_bytes((secret / "outside.png").read_bytes())
    solid(lib / "fine.jpg", "blue")
    swaps = [
        {"path": str(lib / "pipe.jpg"), "to": "fifo"},
        {"path": str(lib / "captioned.txt"), "to": "fifo"},  # a caption that would block
        {"path": str(lib / "zero.jpg"), "to": "symlink:/dev/zero"},
        {"path": str(lib / "passwd.txt"), "to": "symlink:/etc/passwd"},
        {"path": str(lib / "outside.png"), "to": f"symlink:{secret / 'outside.png'}"},
    ]
    env = {**os.environ, "MMSEARCH_TEST_SWAP": json.dumps(swaps)}
    cmd = [*SABOTAGE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--no-ocr"]
    done, rss = _peak_rss_mib(cmd, timeout=60, env=env)  # hung forever (FIFO) or ran out of memory before
    assert done.returncode == 3, done.stderr[-3000:]
    assert "SWAPPED" in done.stdout
    skips = _skips(done.stderr)
    assert set(skips) == {"pipe.jpg", "zero.jpg", "passwd.txt", "outside.png"}, skips
    assert all("symbolic link" in skips[n] for n in ("zero.jpg", "passwd.txt", "outside.png")), skips
    assert "not a regular file" in skips["pipe.jpg"]
    with Engine.open(idx) as eng:
        items = eng.store.get_items(range(1, 100))
        names = {Path(it.path).name: it for it in items.values()}
        assert set(names) == {"captioned.jpg", "in.png", "fine.jpg"}
        assert names["captioned.jpg"].caption is None  # the pipe was not read (nor waited on)
        assert not any("root:" in (it.excerpt or "") for it in items.values())
    assert rss < 600, rss

    # with --follow-symlinks: links are followed, but never out of the indexed folders
    (lib / "zero.jpg").unlink()
    os.symlink(secret / "in.png", lib / "linked-dir" / "to-secret.png")  # found by the walk, pointing out
    os.symlink(lib / "fine.jpg", lib / "link-in.jpg")
    solid(lib / "fresh.jpg", "yellow")
    swaps = [{"path": str(lib / "fresh.jpg"), "to": f"symlink:{secret / 'in.png'}"}]  # swapped after the walk
    env = {**os.environ, "MMSEARCH_TEST_SWAP": json.dumps(swaps)}
    done = _run([*cmd, "--follow-symlinks"], timeout=60, env=env)
    skips = _skips(done.stderr)
    assert "outside the indexed folders" in skips["to-secret.png"], skips
    assert "outside the indexed folders" in skips["passwd.txt"], skips  # /etc/passwd, followed: out of the tree
    assert "outside the indexed folders" in skips["fresh.jpg"], skips  # the swap, caught on the open descriptor
    with Engine.open(idx) as eng:
        names = {Path(it.path).name for it in eng.store.get_items(range(1, 100)).values()}
        assert names == {"captioned.jpg", "in.png", "fine.jpg", "link-in.jpg"}, names


def test_ctrl_c_ends_a_run_at_once_even_with_a_read_stuck_forever(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for i in range(300):
        solid(lib / f"p{i:04d}.png", ["red", "green", "blue"][i % 3])
    stuck = lib / "p0150.png"  # a read that never returns (a network share that stopped answering)
    env = {**os.environ, "MMSEARCH_TEST_SWAP": json.dumps([{"path": str(stuck), "to": "block"}])}
    proc = subprocess.Popen(
        [*SABOTAGE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--batch-size", "8", "--no-ocr"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.time() + 60
    while "BLOCKED" not in proc.stdout.readline():
        assert proc.poll() is None and time.time() < deadline
    time.sleep(1.0)  # let the run commit what it can before the stuck file
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    stopped = time.perf_counter() - t
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err, err[-2000:]
    assert stopped < 2.0, stopped  # a thread pool joined at exit waited forever here
    with Engine.open(idx) as eng:
        kept = eng.store.counts().get("image", 0)
    assert kept >= 100  # the batches before the stuck file were committed and kept
    done = _run([*FAKE_CLI, "index", str(lib), "--index", str(idx), "--json"])
    assert done.returncode == 0 and sum(json.loads(done.stdout)["counts"].values()) == 300


# -- memory: pixels x workers ----------------------------------------------------------------------------
def test_huge_pictures_with_eight_workers_stay_under_the_pixel_budget(tmp_path: Path) -> None:
    """The soak: eight 9000x9000 PNGs (~250 KB each on disk, 243 MB each decoded) and eight large sparse files,
    indexed with --workers 8. Before the pixel budget, 8 such PNGs peaked at 6 GB."""
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    base = np.zeros((9000, 9000, 3), dtype=np.uint8)
    for i in range(8):
        base[:, :, :] = [(200, 30, 30), (30, 200, 30), (30, 30, 200)][i % 3]
        base[i, i] = (i, i, i)  # eight different files (no vector reuse by hash)
        Image.fromarray(base).save(lib / f"big{i}.png", compress_level=1)
    del base
    for i in range(4):
        _sparse(lib / f"sparse{i}.jpg", 1 << 30)
        _sparse(lib / f"notes{i}.txt", 1 << 30, b"notes " * 300_000)  # not captions: other names
    small_lib = tmp_path / "small"
    solid(small_lib / "a.png", "red")
    _, baseline = _peak_rss_mib(
        [*FAKE_CLI, "index", str(small_lib), "--model", "fake", "--index", str(tmp_path / "i0")]
    )
    cmd = [*FAKE_CLI, "index", str(lib), "--model", "fake", "--index", str(idx), "--workers", "8", "--no-ocr"]
    done, rss = _peak_rss_mib(cmd, timeout=600)
    assert done.returncode == 3, done.stderr[-2000:]  # the sparse .jpg files are skipped, one line each
    skips = _skips(done.stderr)
    assert set(skips) == {f"sparse{i}.jpg" for i in range(4)}, skips
    with Engine.open(idx) as eng:
        assert eng.store.counts() == {"image": 8, "text": 4}
    above = rss - baseline
    print(
        f"\nsoak: 8 x 9000^2 PNG + 8 x 1 GB sparse, --workers 8: peak {rss:.0f} MiB, {above:.0f} MiB above a 1-file run"
    )
    assert above < 1536, above


# -- 7. one-line errors for what a terminal can send -------------------------------------------------------
def test_query_text_that_is_not_utf8_and_huge_paths_are_one_line_errors(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    solid(lib / "a.jpg", "red")
    assert runner.invoke(app, ["index", str(lib), "--model", "fake", "--index", str(idx), "-q"]).exit_code == 0
    env = {**os.environ, "MMSEARCH_INDEX": str(idx)}
    cases = {
        "latin-1 byte": [b"query", b"caf\xe9"],
        "long --path": [b"query", b"red", b"--path", b"*" * 60_000],
        "5000 parts": [b"query", b" + ".join([b"cat"] * 5000)],
        "huge weights": [b"query", b"1e308:cat + 1e308:dog"],
    }
    for name, args in cases.items():
        done = subprocess.run(
            [os.fsencode(sys.executable), os.fsencode(HERE / "fake_cli.py"), *args],
            capture_output=True,
            env=env,
            timeout=60,
        )
        err = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1, (name, err[-1500:])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, (name, err[-1500:])


def test_control_characters_in_names_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    evil = "evil\x1b]0;owned\x07\x1b[2J\nsecond line.jpg"
    solid(lib / evil, "red")
    (lib / ("broken\x1b[31m\nx.jpg")).write_bytes(b"not a picture")
    done = runner.invoke(app, ["index", str(lib), "--model", "fake", "--index", str(idx)])
    assert done.exit_code == 3
    skip_lines = [ln for ln in done.stderr.splitlines() if ln.startswith("skipping")]
    assert len(skip_lines) == 1 and "\x1b" not in done.stderr and "broken\\x1b[31m\\x0ax.jpg" in skip_lines[0]
    table = runner.invoke(app, ["query", "red", "--index", str(idx), "-k", "1"]).stdout
    assert "\x1b" not in table and "\x07" not in table and "evil" in table, table
    lines = runner.invoke(app, ["query", "red", "--index", str(idx), "-k", "1", "--paths-only"]).stdout.splitlines()
    assert lines == [str(lib / "evil\\x1b]0;owned\\x07\\x1b[2J\\x0asecond line.jpg")], lines  # one path, one line
    raw = runner.invoke(app, ["query", "red", "--index", str(idx), "-k", "1", "--null"]).stdout_bytes
    assert raw == os.fsencode(lib / evil) + b"\0"  # scripts get the name exactly
    hit = json.loads(runner.invoke(app, ["query", "red", "--index", str(idx), "-k", "1", "--json"]).stdout)[0]
    assert hit["path"] == str(lib / evil)


def test_formats_outside_the_allow_list_are_not_decoded(tmp_path: Path) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    Image.new("RGB", (20, 20), (200, 20, 20)).save(lib / "eps-named.jpg", format="EPS")  # Ghostscript's business
    Image.new("RGB", (20, 20), (200, 20, 20)).save(lib / "tga-named.png", format="TGA")
    Image.new("RGB", (20, 20), (200, 20, 20)).save(lib / "png-named.jpg", format="PNG")  # allowed: content decides
    with Engine.open(idx, model="fake", create=True) as eng:
        report = eng.index([lib])
        assert {Path(p).name: r for p, r in report.skipped} == {
            "eps-named.jpg": "not a readable image",
            "tga-named.png": "not a readable image",
        }
        assert [Path(h.path).name for h in eng.search(text="red", k=5)] == ["png-named.jpg"]


# -- 8 and risks: damaged or untrustworthy caches ----------------------------------------------------------
def _library(tmp_path: Path) -> tuple[Path, Path]:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for i in range(40):
        solid(lib / f"p{i:02d}.png", ["red", "green", "blue", "yellow"][i % 4])
    for i in range(10):
        (lib / f"n{i}.txt").write_text(f"a note about {['red', 'blue'][i % 2]} things, number {i}")
    assert runner.invoke(app, ["index", str(lib), "--model", "fake", "--index", str(idx), "-q"]).exit_code == 0
    return lib, idx


def _answers(idx: Path) -> list[list[tuple[str, float]]]:
    out = []
    for q, target in (("red", "image"), ("blue things", "text"), ("yellow", "any")):
        done = runner.invoke(app, ["query", q, "--index", str(idx), "-t", target, "--json", "-k", "50"])
        assert done.exit_code == 0, done.output
        out.append([(h["path"], round(h["score"], 5)) for h in json.loads(done.stdout)])
    return out


def _zeroed_copy(src: Path, dst: Path) -> None:
    import faiss

    index = faiss.read_index(str(src))
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    zeroed = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    zeroed.add_with_ids(np.zeros((len(ids), index.d), dtype=np.float32), ids)
    faiss.write_index(zeroed, str(dst))


def test_damaged_or_swapped_faiss_files_are_rebuilt_never_trusted(tmp_path: Path) -> None:
    import faiss

    lib, idx = _library(tmp_path)
    clean = _answers(idx)
    image, side = idx / "image.faiss", idx / "image.faiss.json"
    good = image.read_bytes(), side.read_text()
    other_dim = tmp_path / "other.faiss"
    faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(7)), str(other_dim))
    damage = {
        "sidecar null": lambda: side.write_text("null"),
        "sidecar list": lambda: side.write_text("[]"),
        "sidecar generation 'x'": lambda: side.write_text(json.dumps({**json.loads(good[1]), "generation": "x"})),
        "sidecar dim 'wide'": lambda: side.write_text(json.dumps({**json.loads(good[1]), "dim": "wide"})),
        "sidecar not JSON": lambda: side.write_bytes(b"\xff\xfe{{"),
        "FAISS file garbage": lambda: image.write_bytes(b"\0" * 1000),
        "text.faiss copied over image.faiss": lambda: shutil.copyfile(idx / "text.faiss", image),
        "text.faiss and its sidecar copied": lambda: (
            shutil.copyfile(idx / "text.faiss", image),
            shutil.copyfile(idx / "text.faiss.json", side),
        ),
        "another dimension": lambda: shutil.copyfile(other_dim, image),
        "zeroed vectors": lambda: _zeroed_copy(image, image),
    }
    for name, spoil in damage.items():
        image.write_bytes(good[0])
        side.write_text(good[1])
        spoil()
        assert _answers(idx) == clean, name  # the query rebuilt it from SQLite
        info = runner.invoke(app, ["info", "--index", str(idx), "--json"])
        assert info.exit_code == 0, (name, info.output)
        spoil()
        again = runner.invoke(app, ["index", str(lib), "--index", str(idx), "--json"])
        assert again.exit_code == 0, (name, again.output)
        with Engine.open(idx) as eng:  # repaired on disk: the file now loads and agrees with SQLite
            from mmsearch.vector_index import VectorIndex, load_recipes

            vi, gen = VectorIndex.load(image, load_recipes(), "image")
            assert gen == eng.store.generation("image"), name
            np.testing.assert_array_equal(vi.ids(), eng.store.ids("image"))
        assert _answers(idx) == clean, name


def test_a_damaged_database_is_one_line_from_every_command(tmp_path: Path) -> None:
    lib, idx = _library(tmp_path)
    db = idx / "index.sqlite3"
    assert not (idx / "index.sqlite3-wal").exists() or (idx / "index.sqlite3-wal").stat().st_size == 0
    page = 4096
    with sqlite3.connect(db) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        vector_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'vectors'").fetchone()[0]
    assert pages > 8
    with open(db, "r+b") as f:  # overwrite the data pages after the schema, as a bad disk sector would
        for p in range(max(2, vector_root - 1), pages - 1):
            f.seek(p * page)
            f.write(b"\x42" * page)
    for args in (
        ["query", "red"],
        ["query", "blue things", "-t", "text"],
        ["index", str(lib)],  # before, it reported success
        ["info"],
    ):
        done = subprocess.run([*FAKE_CLI, *args, "--index", str(idx)], capture_output=True, text=True, timeout=60)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 1, (args, done.stdout[-500:], done.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("Error: cannot read index database"), (args, done.stderr[-2000:])
        assert "damaged" in lines[0]


def test_a_query_saving_a_rebuilt_cache_never_blocks_an_index_run(tmp_path: Path, monkeypatch) -> None:
    """Before, a reader saving a rebuilt FAISS file took the writer's lock, and an `index` started meanwhile
    refused, naming the query's pid as "another `mmsearch index`"."""
    from mmsearch.vector_index import VectorIndex

    lib, idx = _library(tmp_path)
    (idx / "image.faiss").unlink()  # the next reader rebuilds and saves it
    saving, release = threading.Event(), threading.Event()
    real_write = VectorIndex.write_temp

    def slow_write(self, *args, **kwargs):  # the reader is in the middle of writing its rebuilt file
        saving.set()
        release.wait(60)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(VectorIndex, "write_temp", slow_write)
    reader = Engine.open(idx)
    query = threading.Thread(target=lambda: (reader.search(text="red", k=3), reader.spaces.save()))
    query.start()
    try:
        assert saving.wait(60)
        solid(lib / "new.png", "red")
        done = _run([*FAKE_CLI, "index", str(lib), "--index", str(idx), "--json"], timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["added"] == 1
    finally:
        release.set()
        query.join(60)
        reader.close()
    with Engine.open(idx) as eng:  # the reader's late save did not clobber the writer's newer file
        assert "new.png" in {Path(h.path).name for h in eng.search(text="red", k=20)}
        from mmsearch.vector_index import load_recipes

        vi, gen = VectorIndex.load(idx / "image.faiss", load_recipes(), "image")
        assert gen == eng.store.generation("image")


# -- risks: long queries --------------------------------------------------------------------------------------
def test_an_hour_long_query_sound_is_heard_for_its_first_minute_only(tmp_path: Path) -> None:
    import soundfile as sf

    from mmsearch.modalities.audio import MAX_QUERY_AUDIO_SECONDS

    rate = 8000
    t = np.arange(int(MAX_QUERY_AUDIO_SECONDS * rate)) / rate
    minute = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    hour = tmp_path / "hour.wav"
    with sf.SoundFile(hour, "w", rate, 1, subtype="PCM_16") as f:
        f.write(minute)
        for i in range(59):  # then 59 minutes of other sounds, which must not be read
            f.write((0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.float32))
    first = tmp_path / "minute.wav"
    sf.write(first, minute, rate, subtype="PCM_16")
    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.towers import plain

    enc = plain(load_encoder("builtin"))
    from mmsearch.modalities import get

    started = time.perf_counter()
    v_hour = get("audio").embed_query(hour, enc, ["audio"])["audio"]
    took = time.perf_counter() - started
    v_min = get("audio").embed_query(first, enc, ["audio"])["audio"]
    np.testing.assert_allclose(v_hour, v_min, atol=1e-5)
    print(f"\n1-hour query sound: {took:.1f} s (its first {MAX_QUERY_AUDIO_SECONDS:.0f} s)")


@pytest.mark.parametrize("weights", ["1e308:cat + 1e308:dog", "0:cat", "1e-9:cat", "5000:cat"])
def test_weights_out_of_bounds_are_refused(weights: str) -> None:
    from mmsearch.errors import QueryError
    from mmsearch.search import Query

    with pytest.raises(QueryError, match="weight"):
        Query.parse(weights).validate()


def test_resource_limits_are_what_the_docs_say() -> None:
    """The numbers docs/reliability.md quotes."""
    from mmsearch.modalities import image as media
    from mmsearch.modalities import text as notes
    from mmsearch.search.grammar import MAX_QUERY_CHARS, MAX_TERMS
    from mmsearch.search.query import MAX_PARTS, MAX_PATTERN_CHARS

    text = (HERE.parent / "docs" / "reliability.md").read_text()
    for value in (
        f"{media.MAX_IMAGE_BYTES >> 20} MiB",
        f"{notes.MAX_TEXT_BYTES >> 20} MiB",
        f"{media.PIXEL_BUDGET // 1_000_000} megapixels",
        f"{MAX_TERMS} parts",
        f"{MAX_PARTS} parts",
        f"{MAX_QUERY_CHARS:,} characters",
        f"{MAX_PATTERN_CHARS:,} characters",
    ):
        assert value in text, value


def test_a_file_named_alone_still_reads_its_caption_beside_it(tmp_path: Path) -> None:
    """Reads stay inside the indexed roots; for a file named alone, that is its folder (its caption lies there)."""
    photo = solid(tmp_path / "lib" / "beach.jpg", "yellow")
    (tmp_path / "lib" / "beach.txt").write_text("sand at the beach")
    with Engine.open(tmp_path / "idx", model="fake", create=True) as eng:
        report = eng.index([photo])
        assert report.added == 1 and not report.skipped
        (item,) = eng.store.get_items([1]).values()
        assert item.caption == "sand at the beach"


@pytest.mark.parametrize(
    ("key", "value"),
    [("model", "builtin"), ("model", "{not json"), ("generation:image", '"seven"'), ("generation:image", "1.5")],
)
def test_meta_values_edited_into_nonsense_are_one_line_from_every_command(tmp_path: Path, key: str, value: str) -> None:
    """The meta table holds JSON mmsearch wrote; an edited or damaged value (not JSON, or a generation
    that is no number) is a damaged index, never a traceback."""
    lib, idx = _library(tmp_path)
    with sqlite3.connect(idx / "index.sqlite3") as conn:
        assert conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key)).rowcount == 1
    for args in (["query", "red"], ["index", str(lib)], ["info"]):
        done = subprocess.run([*FAKE_CLI, *args, "--index", str(idx)], capture_output=True, text=True, timeout=60)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        if args == ["info"] and key.startswith("generation:") and done.returncode == 0:
            continue  # info reads no generation: nothing to refuse
        assert done.returncode == 1, (args, done.stdout[-500:], done.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("Error:") and key in lines[0], (args, done.stderr[-2000:])
