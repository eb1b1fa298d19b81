"""Concurrent searches answered together: the same answers as one at a time, and really batched."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from real_photos import sources
from serving import Server
from typer.testing import CliRunner

from mmsearch import Engine, threads
from mmsearch.cli import app as cli_app
from mmsearch.errors import QueryError
from mmsearch.search import Query, QueryPart
from mmsearch.server import batching
from mmsearch.server.batching import Batcher

runner = CliRunner()
PHOTOS = ("cat.png", "coffee.png", "rocket.jpg", "motorcycle.png", "astronaut.png")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batched")
    for name in PHOTOS:
        Image.open(sources()[name]).convert("RGB").save(root / name)
    (root / "pasta.md").write_text("# Weeknight pasta\nBoil salted water, cook spaghetti for nine minutes.")
    (root / "moon.txt").write_text("Notes on the moon landing: the astronauts walked for two hours.")
    index = tmp_path_factory.mktemp("batched-index")
    assert runner.invoke(cli_app, ["index", str(root), "--index", str(index), "-q"]).exit_code == 0
    return root, index


@pytest.fixture(scope="module")
def engine(library) -> Iterator[Engine]:
    with Engine.open(library[1]) as eng:
        yield eng


def mixed_queries(root: Path, eng: Engine) -> list[Query]:
    """Text, several parts, negative parts, pictures, a raw vector, filters, paging, other fusions and
    targets: every path a query takes through the batch."""
    vec = eng.embed_text(["a rocket launch"])[0]
    return [
        Query.parse("a cat"),
        Query.parse("coffee + morning", k=3),
        Query.parse("a vehicle - motorcycle"),
        Query.parse(None, parts=[QueryPart("image", str(root / "coffee.png"))]),
        Query.parse("space", parts=[QueryPart("image", str(root / "rocket.jpg"), 0.5)], k=4),
        Query.parse(None, parts=[QueryPart("vector", vec)]),
        Query.parse("a cat", path="*.png"),
        Query.parse("a cat", path="*nothing-matches*"),
        Query.parse("astronaut", target="any", k=5),
        Query.parse("cooking dinner", target="text"),
        Query.parse("a cat", offset=2, k=2),
        Query.parse("a cat", fusion="rrf"),
        Query.parse("a cat", fusion="max", dedupe=True, min_score=0.0),
        Query.parse("a cat"),  # the same query twice in one batch
    ]


def same_hits(alone: list, together: list) -> None:
    assert [h.id for h in together] == [h.id for h in alone]
    assert [h.path for h in together] == [h.path for h in alone]
    assert np.allclose([h.score for h in together], [h.score for h in alone], atol=1e-6, rtol=0)
    assert [h.metadata for h in together] == [h.metadata for h in alone]


def test_search_many_equals_one_at_a_time(library, engine: Engine) -> None:
    queries = mixed_queries(library[0], engine)
    alone = [engine.run_query(q) for q in queries]
    together = engine.search_many(queries)
    assert len(together) == len(queries)
    for a, b in zip(alone, together, strict=True):
        assert not isinstance(b, Exception)
        same_hits(a, b)
    assert Path(alone[0][0].path).name == "cat.png" and alone[7] == []  # real rankings, not empty lists
    assert Path(alone[3][0].path).name == "coffee.png"


def test_search_many_through_the_flat_product_equals_one_at_a_time(library, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with every space's batch searched by the prepacked product (made for large flat indexes
    only: here for all)."""
    from mmsearch import flat_product

    monkeypatch.setattr(flat_product, "MIN_VECTORS", 1)
    with Engine.open(library[1]) as eng:
        queries = mixed_queries(library[0], eng)
        alone = [eng.run_query(q) for q in queries]
        together = eng.search_many(queries)
        assert isinstance(eng.spaces.get("image")._product, flat_product.FlatProduct)
    for a, b in zip(alone, together, strict=True):
        assert not isinstance(b, Exception)
        same_hits(a, b)


def test_one_bad_query_fails_alone(library, engine: Engine) -> None:
    root = library[0]
    good = [Query.parse("a cat"), Query.parse(None, parts=[QueryPart("image", str(root / "rocket.jpg"))])]
    bad_image = Query.parse(None, parts=[QueryPart("image", str(root / "missing.jpg"))])
    bad_target = Query.parse("a cat", target="holograms")
    out = engine.search_many([good[0], bad_image, good[1], bad_target])
    assert isinstance(out[1], QueryError) and "missing.jpg" in str(out[1])
    assert isinstance(out[3], QueryError) and "holograms" in str(out[3])
    for q, got in zip(good, (out[0], out[2]), strict=True):
        assert not isinstance(got, Exception)
        same_hits(engine.run_query(q), got)


def test_server_batches_concurrent_mixed_queries_and_answers_each_as_alone(library, engine: Engine) -> None:
    from mmsearch.server import create_app

    root, index = library
    vec = engine.embed_text(["a rocket launch"])[0].tolist()
    picture = base64.b64encode((root / "coffee.png").read_bytes()).decode()
    requests_ = [
        ("/search", {"text": "a cat", "k": 5}),
        ("/search", {"text": "coffee + morning", "k": 3}),
        ("/search", {"parts": [{"kind": "image", "data": picture}], "k": 4}),
        ("/search", {"text": "astronaut", "target": "any", "k": 5}),
        ("/knn-service", {"embedding_input": vec, "num_images": 4}),
        ("/knn-service", {"text": "a motorcycle", "num_images": 3}),
        ("/search", {"text": "space", "parts": [{"kind": "image", "data": picture, "weight": 0.5}]}),
        ("/search", {"text": "a cat", "path": "*nothing*"}),
    ] * 3

    def ask(url: str, route: str, body: dict) -> list:
        r = requests.post(url + route, json=body, timeout=60)
        assert r.status_code == 200, r.text
        hits = r.json()
        return [(h["id"], round(h["score" if route == "/search" else "similarity"], 6)) for h in hits]

    serial = Server(create_app(index, max_batch=1))
    try:
        want = [ask(serial.url, route, body) for route, body in requests_]
    finally:
        serial.stop()
    assert len({tuple(w) for w in want}) >= 6

    batched = Server(create_app(index, max_batch=32, batch_window_ms=50))
    try:
        got: list = [None] * len(requests_)
        start = threading.Barrier(len(requests_))

        def client(i: int) -> None:
            start.wait()
            got[i] = ask(batched.url, *requests_[i])

        workers = [threading.Thread(target=client, args=(i,)) for i in range(len(requests_))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        stats = requests.get(batched.url + "/health", timeout=30).json()["batching"]
    finally:
        batched.stop()
    for w, g in zip(want, got, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        # to 1e-6: the JSON scores are rounded to 6 decimals, so two scores 1e-8 apart may print one unit apart
        assert np.allclose([s for _, s in g], [s for _, s in w], atol=1e-6 + 1e-9, rtol=0)
    assert stats["searches"] == len(requests_)
    assert max(int(k) for k in stats["sizes"]) > 1, stats  # they were answered together, not in turn


def queue_behind_a_held_batch(b: Batcher, gate: threading.Event, texts: tuple[str, ...]) -> dict[str, object]:
    """Ask "first" (its batch holds the worker until ``gate``), then ``texts`` while it waits; each
    request's answer, or the exception it raised."""
    answers: dict[str, object] = {}

    def ask(text: str) -> None:
        try:
            answers[text] = b.search(Query.parse(text))
        except Exception as e:  # noqa: BLE001 - what each request got is the point
            answers[text] = e

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    time.sleep(0.2)
    rest = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for t in rest:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in [first, *rest]:
        t.join(10)
    return answers


def test_batcher_takes_what_queued_and_hands_each_its_own_answer() -> None:
    seen: list[list[str]] = []
    gate = threading.Event()

    def run_many(queries):
        if not seen:
            gate.wait(10)  # the first batch holds the worker while the others queue
        seen.append([q.parts[0].value for q in queries])
        return [QueryError(f"no {q.parts[0].value}") if q.parts[0].value.startswith("bad") else [q.parts[0].value]
                for q in queries]  # fmt: skip

    answers = queue_behind_a_held_batch(
        Batcher(run_many, max_batch=4, window_s=0.0), gate, ("a", "b", "bad c", "d", "e", "f")
    )
    assert seen[0] == ["first"]
    assert sorted(len(s) for s in seen[1:]) == [2, 4]  # six queued: one batch of max_batch, then the rest
    assert {t for s in seen for t in s} == {"first", "a", "b", "bad c", "d", "e", "f"}
    assert answers["a"] == ["a"] and answers["f"] == ["f"]
    assert isinstance(answers["bad c"], QueryError) and str(answers["bad c"]) == "no bad c"


def test_batcher_one_at_a_time_and_worker_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 0.1)
    b = Batcher(lambda qs: [[q.parts[0].value] for q in qs], max_batch=1)
    out: list = []
    workers = [threading.Thread(target=lambda t=t: out.append(b.search(Query.parse(t)))) for t in "abcdef"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert sorted(out) == [[t] for t in "abcdef"] and set(b.batches) == {1}
    time.sleep(0.5)  # the idle worker has ended...
    assert b.search(Query.parse("later")) == ["later"]  # ...and a new one answers


def test_thread_budget_is_per_thread() -> None:
    import faiss
    import torch  # noqa: F401 - threads.use sizes only what is imported
    from threadpoolctl import threadpool_info

    seen: dict[str, int] = {}

    def narrow_here() -> None:
        threads.narrow()
        seen["narrowed"] = faiss.omp_get_max_threads()

    def untouched(key: str) -> None:
        seen[key] = faiss.omp_get_max_threads()

    for fn, args in ((untouched, ("before",)), (narrow_here, ()), (untouched, ("after",))):
        t = threading.Thread(target=fn, args=args)
        t.start()
        t.join()
    assert seen["narrowed"] == 1
    assert seen["after"] == seen["before"]  # OpenMP's setting belongs to the thread that made it
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert seen["before"] > 1
    numpy_blas = [i for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
    assert numpy_blas and all(i["num_threads"] == 1 for i in numpy_blas)  # its idle threads spin: off


def test_thread_budget_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_THREADS", "3")
    assert threads.budget() == 3
    monkeypatch.setenv("MMSEARCH_THREADS", "zero")
    assert threads.budget() >= 1


def test_a_query_that_crashes_the_batch_fails_alone() -> None:
    """A failure no one planned for (a decoder crashing on one hostile upload) must not fail the other
    requests of its batch: they are answered again one by one."""
    gate = threading.Event()
    calls: list[int] = []

    def run_many(queries):
        if not calls:
            gate.wait(10)
        calls.append(len(queries))
        if any(q.parts[0].value == "boom" for q in queries):
            raise RuntimeError("decoder crashed")
        return [[q.parts[0].value] for q in queries]

    answers = queue_behind_a_held_batch(Batcher(run_many, max_batch=8, window_s=0.0), gate, ("a", "boom", "c"))
    assert calls[:2] == [1, 3]  # the batch of three failed as a whole...
    assert answers["a"] == ["a"] and answers["c"] == ["c"]  # ...and was answered again, one by one
    assert isinstance(answers["boom"], RuntimeError)


def _children(pid: int) -> list[int]:
    """The worker processes ``pid`` spawned (multiprocessing's, by their command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                if b"spawn_main" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
        except OSError:
            continue
    return sorted(found)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_serve_with_two_workers_shares_one_port_and_answers_as_one_process(library, engine: Engine) -> None:
    """`mmsearch serve --workers 2`: two processes on one port, each with half the threads and the token;
    every answer is what the engine gives in-process; Ctrl-C stops them all."""
    import signal
    import subprocess
    import sys

    from serving import free_port

    _, index = library
    texts = ["a cat", "coffee + morning", "astronaut", "a vehicle - motorcycle", "cooking dinner", "space"]
    want = {t: [(h.id, round(h.score, 6)) for h in engine.search(t, k=4)] for t in texts}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer s3cret"}
    cmd = [sys.executable, "-m", "mmsearch.cli", "serve", "--index", str(index), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "MMSEARCH_THREADS"}
    parent = subprocess.Popen([*cmd, "--workers", "2", "--token", "s3cret"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:
            assert parent.poll() is None, parent.stderr.read().decode() if parent.stderr else ""
            try:
                if requests.get(f"{url}/health", headers=auth, timeout=5).ok and len(_children(parent.pid)) == 2:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "the workers did not start"
            time.sleep(0.3)
        workers = _children(parent.pid)
        for w in workers:
            environ = Path(f"/proc/{w}/environ").read_bytes().split(b"\0")
            assert f"MMSEARCH_THREADS={max(1, threads.budget() // 2)}".encode() in environ
        assert requests.post(f"{url}/search", json={"text": "a cat"}, timeout=30).status_code == 401

        before = {w: _cpu_ticks(w) for w in workers}
        got: dict[str, list] = {}
        errors: list[str] = []

        def client(n: int) -> None:
            for i in range(6):
                text = texts[(n + i) % len(texts)]
                # a new connection each time: the kernel hands each to whichever worker accepts first
                r = requests.post(f"{url}/search", json={"text": text, "k": 4}, headers=auth, timeout=60)
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                answer = [(h["id"], round(h["score"], 6)) for h in r.json()]
                if got.setdefault(text, answer) != answer:
                    errors.append(f"{text}: {answer} != {got[text]}")

        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(120)
        assert not errors, errors[:3]
        for t in texts:
            assert [i for i, _ in got[t]] == [i for i, _ in want[t]], t
            assert np.allclose([s for _, s in got[t]], [s for _, s in want[t]], atol=1e-6 + 1e-9, rtol=0)
        assert all(_cpu_ticks(w) > before[w] for w in workers), "both workers answered"
    finally:
        parent.send_signal(signal.SIGINT)
        try:
            rc = parent.wait(30)
        except subprocess.TimeoutExpired:
            parent.kill()
            raise
    assert rc == 0
    assert not _children(parent.pid)


def test_serve_workers_refuse_a_missing_index_once(tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["serve", "--index", str(tmp_path / "nothing"), "--workers", "2"])
    assert result.exit_code == 1
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output


def test_serve_workers_that_cannot_start_stop_with_one_error_each(library, tmp_path: Path) -> None:
    """A worker that fails before serving (a model it cannot load) ends the server: exit 1, its one-line
    error, no traceback, and no endless restarts."""
    import shutil
    import sqlite3
    import subprocess
    import sys

    from serving import free_port

    index = tmp_path / "idx"
    shutil.copytree(library[1], index)
    with sqlite3.connect(index / "index.sqlite3") as db:
        db.execute("""UPDATE meta SET value = '"no-such-model"' WHERE key = 'model'""")
    cmd = [sys.executable, "-m", "mmsearch.cli", "serve", "--index", str(index), "--port", str(free_port())]
    done = subprocess.run([*cmd, "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert 1 <= done.stderr.count("unknown model 'no-such-model'") <= 2  # each worker once, at most
    assert "stopped before any worker served" in done.stderr
