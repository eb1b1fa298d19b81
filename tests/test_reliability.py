"""Issue 8's promises: hostile files, a read-only or full disk, queries racing a live writer.

(SIGKILL and Ctrl-C are in test_crash.py; the lock in test_cli.py; the server's limits in test_server.py.)
"""

from __future__ import annotations

import builtins
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import COLOURS
from hostile import Expect, make_corpus
from PIL import Image
from typer.testing import CliRunner

import mmsearch.files
import mmsearch.ingest
from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.errors import MediaError

runner = CliRunner()
FAKE_CLI = [sys.executable, str(Path(__file__).parent / "fake_cli.py")]


def _rel(path: str, root: Path) -> str:
    return os.path.relpath(path, root)


def _expectation(rel: str, expect: dict[str, Expect]) -> tuple[str, Expect]:
    """The case a path belongs to (a skipped folder's case covers what is under it)."""
    for key in sorted(expect, key=len, reverse=True):
        if rel == key or rel.startswith(key + "/"):
            return key, expect[key]
    raise AssertionError(f"{rel} is not a case of the corpus")


GROWTH_LIMIT = 1 << 20  # bytes the growing file may gain in one test


def _sabotage(monkeypatch: pytest.MonkeyPatch, corpus: Any) -> None:
    """A file that grows while it is read, a folder removed after the walk, a file open() refuses."""
    sab = corpus.sabotage
    real_walk = mmsearch.ingest.walk

    real_open = mmsearch.files.open_regular

    class Growing:
        def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
            self.f = real_open(path, *args, **kwargs)
            self.path = path
            self.grown = 0

        def __enter__(self) -> Growing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def fileno(self) -> int:
            return self.f.fileno()

        def seek(self, *args: int) -> int:
            return self.f.seek(*args)

        def tell(self) -> int:
            return self.f.tell()

        def read(self, *args: int) -> bytes:
            data = self.f.read(*args)
            # the camera is still writing it; bounded, so that a reader that never stops cannot fill the
            # disk (an unbounded version once grew this file to 40 GB and failed every later test)
            if self.grown < GROWTH_LIMIT:
                with builtins.open(self.path, "ab") as w:
                    w.write(b"\0" * 1000)
                self.grown += 1000
            return data

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(sab.unreadable):
            raise MediaError("cannot read: Permission denied")  # what opening says when chmod binds
        if str(file) == str(sab.changing):
            return Growing(str(file), *args, **kwargs)
        return real_open(file, *args, **kwargs)

    def walk_then_remove(*args: Any, **kwargs: Any) -> Any:
        found = real_walk(*args, **kwargs)
        shutil.rmtree(sab.vanishing)
        return found

    monkeypatch.setattr(mmsearch.files, "open_regular", guarded_open)
    monkeypatch.setattr(mmsearch.ingest, "walk", walk_then_remove)


def test_a_corpus_of_hostile_files_is_skipped_one_line_each_and_nothing_else_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "corpus"
    corpus = make_corpus(root)
    expect = corpus.expect
    kinds = len(expect)
    assert kinds >= 30
    idx = tmp_path / "idx"
    _sabotage(monkeypatch, corpus)
    started = time.monotonic()
    result = runner.invoke(app, ["index", str(root), "--model", "fake", "--index", str(idx)])
    first_run_s = time.monotonic() - started
    monkeypatch.undo()
    assert result.exit_code == 3, (result.output, result.exception)

    # one line per skipped file, naming it and the reason; the summary counts them
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("skipping ")]
    skipped: dict[str, str] = {}
    for line in lines:
        path, reason = line[len("skipping ") :].split(": ", 1)
        key, case = _expectation(_rel(path, root), expect)
        assert case.what == "skip", f"{path} should not be skipped: {reason}"
        assert case.reason in reason, (path, reason, case.reason)
        skipped[_rel(path, root)] = reason
    want_skips = {k for k, v in expect.items() if v.what == "skip"}
    assert {_expectation(r, expect)[0] for r in skipped} == want_skips
    assert len(lines) == len(skipped)  # never twice
    assert f"skipped {len(lines)}" in result.stdout

    # everything else that can be indexed is, and indexed right
    with Engine.open(idx) as eng:
        items = eng.store.get_items(
            [int(i) for space in ("image", "text", "audio") for i in eng.store.ids(space)]
        ).values()
        indexed = {_rel(it.path, root): it for it in items}
        want = {k for k, v in expect.items() if v.what == "index"}
        assert set(indexed) == want, set(indexed) ^ want
        for rel, item in indexed.items():
            case = expect[rel]
            if case.size:
                assert (item.width, item.height) == case.size, rel
            if case.colour:
                vec = eng.store.vectors_of([item.id], ["image"])[(item.id, "image")]
                assert COLOURS[int(np.argmax(vec[:6]))] == case.colour, rel
            if case.words:
                assert case.words in (item.excerpt or ""), (rel, item.excerpt)
        assert indexed["photo-with-binary-caption.jpg"].caption is None
        for space in eng.store.spaces():
            np.testing.assert_array_equal(eng.vector_ids(space), eng.store.ids(space))

    # the next run picks up what was only unlucky, keeps everything, and reports the rest again
    result = runner.invoke(app, ["index", str(root), "--index", str(idx), "--json"])
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 2  # changing.jpg (now still) and unreadable.jpg
    assert report["removed"] == 0 and report["updated"] == 0
    assert len(report["skipped"]) == len(lines) - 4  # minus those two and the two vanished files
    assert sum(report["counts"].values()) == len(want) + 2
    print(f"\nhostile corpus: {kinds} kinds, {len(lines)} skipped one line each, first run {first_run_s:.1f} s")


def _honour_file_modes() -> None:
    """In the child: drop root's power to ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so
    a read-only folder is read-only to it as to anyone (tests here run as root)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, effective from the exec on
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


AS_USER = _honour_file_modes if os.getuid() == 0 else None


def _solid_folder(root: Path, n: int, start: int = 0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        colour = np.array(
            [(220, 20, 20), (20, 40, 220), (20, 160, 40), (240, 220, 30), (10, 10, 10), (245, 245, 245)][i % 6]
        )
        arr = np.clip(colour + rng.integers(-40, 41, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{i:05d}.png")


def _index(photos: Path, idx: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [*FAKE_CLI, "index", str(photos), "--index", str(idx), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def _query(idx: Path, text: str, *extra: str, as_user: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FAKE_CLI, "query", text, "--index", str(idx), "--json", "-k", "100", *extra],
        capture_output=True,
        text=True,
        preexec_fn=AS_USER if as_user else None,
        timeout=120,
    )


def test_a_read_only_index_answers_queries_and_refuses_writes_in_one_line(tmp_path: Path) -> None:
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    _solid_folder(photos, 30)
    _index(photos, idx, "--model", "fake", "-q")
    before = {p.name: p.read_bytes() for p in idx.iterdir() if p.is_file()}
    expected = json.loads(_query(idx, "red").stdout)
    _solid_folder(photos, 5, start=30)  # new files the refused run must not index
    for p in [*idx.iterdir(), idx]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    try:
        answered = _query(idx, "red", as_user=True)
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout) == expected

        refused = subprocess.run(
            [*FAKE_CLI, "index", str(photos), "--index", str(idx)], capture_output=True, text=True, preexec_fn=AS_USER
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("Error: cannot write index"), refused.stderr
        assert len(refused.stderr.splitlines()) == 1
        assert {p.name: p.read_bytes() for p in idx.iterdir() if p.is_file()} == before
    finally:
        os.chmod(idx, 0o755)


def test_a_full_disk_stops_the_run_with_one_line_and_the_index_stays_whole(tmp_path: Path) -> None:
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    _solid_folder(photos, 40)
    _index(photos, idx, "--model", "fake", "-q")
    expected = json.loads(_query(idx, "blue").stdout)
    _solid_folder(photos, 600, start=40, seed=1)
    # RLIMIT_FSIZE makes every write past the limit fail in the kernel, as a full disk does (root or not)
    limit = max(p.stat().st_size for p in idx.iterdir()) + 60_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        [*FAKE_CLI, "index", str(photos), "--index", str(idx), "--batch-size", "16"],
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert full.returncode == 1, (full.stdout, full.stderr)
    errors = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: cannot write") and "disk full" in errors[0], errors

    # what was committed is whole: SQLite is sound, FAISS agrees with it, old results unchanged
    import sqlite3

    with sqlite3.connect(idx / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = db.execute("SELECT count(*) FROM items").fetchone()[0]
    assert 40 <= kept < 640
    found = json.loads(_query(idx, "blue", "--path", "*/000[0-3]?.png").stdout)
    assert [(h["path"], h["score"]) for h in found] == [
        (h["path"], h["score"]) for h in expected if Path(h["path"]).name < "00040"
    ]
    with Engine.open(idx) as eng:
        for space in eng.store.spaces():
            np.testing.assert_array_equal(eng.vector_ids(space), eng.store.ids(space))
    # with room again, the next run finishes the job
    done = _index(photos, idx, "--json")
    assert json.loads(done.stdout)["counts"] == {"image": 640}
    print(f"\nfull disk: {errors[0]!r}; {kept - 40} of 600 new files were committed before it, kept whole")


@pytest.mark.slow
def test_queries_racing_a_live_writer_see_whole_committed_states(tmp_path: Path) -> None:
    """A writer commits batches of 16 new pictures; readers (the Python API, the CLI, the server) query
    all the while. Each answer must be exactly what its snapshot holds: in-process, equal to brute force
    over SQLite in the same snapshot; everywhere, a whole number of batches and no error."""
    import requests
    import uvicorn

    from mmsearch.server.app import create_app

    batch, start_n, rounds, per_round = 16, 64, 3, 12
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    _solid_folder(photos, start_n)
    _index(photos, idx, "--model", "fake", "-q", "--batch-size", str(batch))

    eng = Engine.open(idx)  # one long-lived reader, as the server and API users hold one
    server = uvicorn.Server(uvicorn.Config(create_app(idx), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    checks = {"api": 0, "cli": 0, "server": 0}
    seen_counts: set[int] = set()

    def check_api() -> None:
        with eng.store.snapshot():
            n = int(eng.store.counts().get("image", 0))
            hits = eng.search(text="red", k=10_000)
            ids, vecs = [], []
            for i, v in eng.store.iter_vectors("image"):
                ids.append(i)
                vecs.append(v)
            all_ids, all_vecs = np.concatenate(ids), np.concatenate(vecs)
        q = eng.embed_text(["red"])[0]
        exact = all_vecs @ q
        order = np.argsort(-exact, kind="stable")
        assert len(hits) == n == len(all_ids)
        assert (n - start_n) % batch == 0, n
        np.testing.assert_allclose([h.score for h in hits], exact[order], atol=1e-5)
        assert {h.id for h in hits} == set(all_ids.tolist())
        seen_counts.add(n)
        checks["api"] += 1

    def check_cli() -> None:
        out = _query(idx, "red", "-k", "10000")
        assert out.returncode == 0, out.stderr
        hits = json.loads(out.stdout)
        assert (len(hits) - start_n) % batch == 0 and len({h["path"] for h in hits}) == len(hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        checks["cli"] += 1

    def check_server() -> int:
        r = requests.post(f"http://127.0.0.1:{port}/search", json={"text": "red", "k": 1000}, timeout=60)
        assert r.status_code == 200, r.text
        hits = r.json()["results"] if isinstance(r.json(), dict) else r.json()
        assert (len(hits) - start_n) % batch == 0, len(hits)
        for h in hits[:3]:
            assert requests.get(f"http://127.0.0.1:{port}/items/{h['id']}", timeout=30).status_code == 200
        checks["server"] += 1
        return len(hits)

    try:
        n = start_n
        for r in range(rounds):
            _solid_folder(photos, per_round * batch, start=n, seed=r + 1)
            n += per_round * batch
            writer = subprocess.Popen(
                [*FAKE_CLI, "index", str(photos), "--index", str(idx), "-q", "--batch-size", str(batch)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            failures: list[BaseException] = []

            def cli_loop(w: subprocess.Popen[str] = writer, failures: list[BaseException] = failures) -> None:
                try:
                    while w.poll() is None:
                        check_cli()
                except BaseException as e:  # reported in the main thread
                    failures.append(e)

            cli = threading.Thread(target=cli_loop)
            cli.start()
            while writer.poll() is None:
                check_api()
                check_server()
            cli.join()
            assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
            if failures:
                raise failures[0]
        check_api()
        assert check_server() == n  # the long-lived server sees every commit, not the index it started with
        assert max(seen_counts) == n
        midway = {c for c in seen_counts if (c - start_n) % (per_round * batch)}
        assert midway, seen_counts  # the readers really did see the writer between its commits
        print(f"\nracing reads: {checks}; committed states seen: {sorted(seen_counts)}")
    finally:
        server.should_exit = True
        thread.join(10)
        eng.close()


def test_processes_opening_a_new_index_at_once_all_succeed(tmp_path: Path) -> None:
    """Found by the Ctrl-C test: a query opening the index while the first run created it saw half a schema."""
    db = tmp_path / "new" / "index.sqlite3"
    db.parent.mkdir()
    code = f"from pathlib import Path; from mmsearch.store import Store; print(Store(Path({str(db)!r})).counts())"
    cmd = [sys.executable, "-c", code]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    results = [(p.wait(60), p.stdout.read() if p.stdout else b"", p.stderr.read() if p.stderr else b"") for p in procs]
    assert all(code == 0 and out.strip() == b"{}" for code, out, _ in results), results
