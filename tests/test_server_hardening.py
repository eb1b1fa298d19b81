"""Issue 14, the server's side: no request stalls it, no file outside the index leaves it, no 500s, and a
stranger's URL, Host header or empty token gets nowhere."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import solid
from PIL import Image
from serving import Server, free_port
from typer.testing import CliRunner

from mmsearch.cli import app as cli_app

runner = CliRunner()
HERE = Path(__file__).parent
FAKE_CLI = [sys.executable, str(HERE / "fake_cli.py")]


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path]:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for name, colour in (("a.png", "red"), ("b.png", "green"), ("c.png", "blue"), ("d.png", "yellow")):
        solid(lib / name, colour)
    (lib / "note.md").write_text("# A red note\n<script>alert(1)</script> about red things")
    assert runner.invoke(cli_app, ["index", str(lib), "--model", "fake", "--index", str(idx), "-q"]).exit_code == 0
    return lib, idx


def _serve(idx: Path, **kw) -> Server:
    from mmsearch.server import create_app

    return Server(create_app(idx, **kw))


@pytest.fixture
def served(library) -> Iterator[tuple[Path, Path, Server]]:
    s = _serve(library[1])
    yield (*library, s)
    s.stop()


def _ids(server: Server) -> dict[str, int]:
    hits = requests.post(f"{server.url}/search", json={"text": "red", "target": "any", "k": 50}, timeout=30).json()
    return {Path(h["path"]).name: h["id"] for h in hits}


# -- a slow or hostile upstream never stalls the server -------------------------------------------------
class _Drip(BaseHTTPRequestHandler):
    """An image URL that sends its body a byte at a time, forever (or a redirect, or 21 MB)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        if self.path == "/huge":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * (21 * 1024 * 1024))
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(120):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.25)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_knn_service_work_never_runs_on_the_event_loop(library, upstream, monkeypatch) -> None:
    import mmsearch.server.fetch

    monkeypatch.setattr(mmsearch.server.fetch, "TIMEOUT_S", 3.0)
    s = _serve(library[1], allow_url_fetch=True, allow_private_urls=True)
    try:
        answers: dict[str, requests.Response] = {}

        def ask(name: str, url: str) -> None:
            answers[name] = requests.post(f"{s.url}/knn-service", json={"image_url": url}, timeout=60)

        started = time.monotonic()
        threads = [
            threading.Thread(target=ask, args=("drip", f"{upstream}/slow.jpg")),
            threading.Thread(target=ask, args=("itself", f"{s.url}/health")),  # deadlocked the server before
        ]
        for t in threads:
            t.start()
        slowest = 0.0
        while any(t.is_alive() for t in threads):
            t0 = time.monotonic()
            assert requests.get(f"{s.url}/health", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.1)
        for t in threads:
            t.join()
        took = time.monotonic() - started
        assert slowest < 1.0, slowest  # /health waited 13 s behind a dripping image_url before
        assert answers["drip"].status_code == 504 and took < 10, (answers["drip"].text, took)
        assert answers["itself"].status_code == 400 and "image" in answers["itself"].json()["detail"]
    finally:
        s.stop()


def test_image_url_fetching_refuses_private_addresses_and_caps_size(library, upstream) -> None:
    from mmsearch.server.fetch import FetchError, fetch

    s = _serve(library[1], allow_url_fetch=True)
    try:
        port = upstream.rsplit(":", 1)[1]
        for url in (
            f"{upstream}/a.jpg",
            f"http://localhost:{port}/a.jpg",
            f"http://[::1]:{port}/a.jpg",
            f"http://2130706433:{port}/a.jpg",  # 127.0.0.1 as a number
            f"http://0x7f.1:{port}/a.jpg",
            "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
            "http://10.1.2.3/a.jpg",
            "http://[::ffff:127.0.0.1]/a.jpg",
        ):
            r = requests.post(f"{s.url}/knn-service", json={"image_url": url}, timeout=30)
            assert r.status_code == 403 and "refused" in r.json()["detail"], (url, r.text)
        for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@example.org/"):
            r = requests.post(f"{s.url}/knn-service", json={"image_url": url}, timeout=30)
            assert r.status_code == 400, (url, r.text)
    finally:
        s.stop()
    # every redirect is checked again: here only 127.0.0.1 is allowed, and the redirect goes to 127.0.0.2
    only_one = lambda ip: str(ip) == "127.0.0.1"  # noqa: E731
    port = upstream.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="127.0.0.2.*refused"):
        fetch(f"{upstream}/redirect?to=http://127.0.0.2:{port}/a.jpg", allowed=only_one)
    with pytest.raises(FetchError, match="too large") as big:
        fetch(f"{upstream}/huge", allowed=only_one)
    assert big.value.status == 413


# -- 4xx JSON, never 500 -------------------------------------------------------------------------------------
def test_hostile_request_bodies_get_4xx_json_not_500(served) -> None:
    _, _, s = served
    lone = '"\\ud800 cat"'  # a lone surrogate, as JSON allows it
    bodies = [
        ("/knn-service", b"[" * 100_000),
        ("/knn-service", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("/knn-service", f'{{"text": {lone}}}'.encode()),
        ("/search", f'{{"text": {lone}}}'.encode()),
        ("/search", f'{{"parts": [{{"kind": "text", "text": {lone}}}]}}'.encode()),
        ("/embed", f'{{"text": {lone}}}'.encode()),
        ("/embed", f'{{"text": ["ok", {lone}]}}'.encode()),
        ("/v1/embeddings", f'{{"input": {lone}}}'.encode()),
        ("/search", json.dumps({"text": "red", "path": "*" * 50_001}).encode()),
        ("/search", json.dumps({"text": " + ".join(["cat"] * 5000)}).encode()),
        ("/search", json.dumps({"text": "1e308:cat + 1e308:dog"}).encode()),
        ("/search", json.dumps({"text": "x" * 20_000}).encode()),
    ]
    for route, body in bodies:
        r = requests.post(f"{s.url}{route}", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert 400 <= r.status_code < 500, (route, body[:60], r.status_code, r.text[:300])
        assert "detail" in r.json(), (route, r.text[:300])
    assert requests.get(f"{s.url}/health", timeout=30).status_code == 200


# -- files: served only while they are the indexed ones ---------------------------------------------------------
def test_served_files_are_the_indexed_ones_or_nothing(served) -> None:
    lib, _, s = served
    ids = _ids(s)
    a = requests.get(f"{s.url}/items/{ids['a.png']}/file", timeout=30)
    assert a.status_code == 200 and a.content == (lib / "a.png").read_bytes()
    assert a.headers["content-type"] == "image/png" and a.headers["x-content-type-options"] == "nosniff"
    assert a.headers["content-disposition"] == "inline; filename*=UTF-8''a.png"
    note = requests.get(f"{s.url}/items/{ids['note.md']}/file", timeout=30)
    assert note.headers["content-type"].startswith("text/plain")  # never text/html: the <script> stays text
    size = (lib / "a.png").stat().st_size
    data = (lib / "a.png").read_bytes()
    for header, status, body in (
        ("bytes=0-9", 206, data[:10]),
        ("bytes=10-", 206, data[10:]),
        ("bytes=-5", 206, data[-5:]),
        (f"bytes={size}-", 416, b""),
        ("bytes=x-y", 416, b""),
    ):
        r = requests.get(f"{s.url}/items/{ids['a.png']}/file", headers={"Range": header}, timeout=30)
        assert r.status_code == status, (header, r.status_code)
        assert r.content == body, header
        if status == 206:
            assert r.headers["content-range"].endswith(f"/{size}")

    # swapped for a link to a secret, a pipe, another file with the same size and mtime
    (lib / "a.png").unlink()
    os.symlink("/etc/passwd", lib / "a.png")
    (lib / "b.png").unlink()
    os.mkfifo(lib / "b.png")
    st = (lib / "c.png").stat()
    other = lib / "c.tmp"
    other.write_bytes(b"\0" * st.st_size)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, lib / "c.png")  # a new inode behind the old name, size and mtime
    for name in ("a.png", "b.png", "c.png"):
        for route in ("file", "thumbnail"):
            r = requests.get(f"{s.url}/items/{ids[name]}/{route}", timeout=10)
            assert r.status_code in (404, 409), (name, route, r.status_code)
            assert b"root:" not in r.content
    with ThreadPoolExecutor(8) as pool:  # 45 requests at a pipe hung the whole server before
        codes = list(
            pool.map(
                lambda _: requests.get(f"{s.url}/items/{ids['b.png']}/thumbnail", timeout=10).status_code, range(45)
            )
        )
    assert set(codes) == {404}
    for route in ("/health", "/info"):
        assert requests.get(f"{s.url}{route}", timeout=10).status_code == 200
    d = requests.get(f"{s.url}/items/{ids['d.png']}/thumbnail", timeout=10)
    assert d.status_code == 200 and Image.open(io.BytesIO(d.content)).format == "JPEG"


def test_a_damaged_cached_thumbnail_is_made_again(served) -> None:
    _, idx, s = served
    ids = _ids(s)
    url = f"{s.url}/items/{ids['a.png']}/thumbnail"
    good = requests.get(url, timeout=30).content
    for cached in (idx / "thumbnails").iterdir():
        cached.write_bytes(b"\0" * 100)
    again = requests.get(url, timeout=30)
    assert again.status_code == 200 and again.content == good


# -- auth, hosts, headers -----------------------------------------------------------------------------------
def test_auth_hygiene(library, monkeypatch) -> None:
    from mmsearch.errors import MmsearchError
    from mmsearch.server import create_app

    _, idx = library
    for empty in ("", "   "):
        with pytest.raises(MmsearchError, match="empty"):
            create_app(idx, token=empty)
    for args, env in ((["--token", ""], {}), ([], {"MMSEARCH_TOKEN": ""})):
        done = subprocess.run(
            [*FAKE_CLI, "serve", "--index", str(idx), "--port", str(free_port()), *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        )  # fmt: skip
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 1 and len(lines) == 1 and "empty" in lines[0], (args, env, done.stderr[-800:])

    s = _serve(idx, token="s3cret")
    try:
        for path in ("/docs", "/openapi.json"):
            assert requests.get(f"{s.url}{path}", timeout=30).status_code == 401, path
            assert requests.get(f"{s.url}{path}?token=", timeout=30).status_code == 401, path
            ok = requests.get(f"{s.url}{path}", headers={"Authorization": "Bearer s3cret"}, timeout=30)
            assert ok.status_code == 200, path
        docs = requests.get(f"{s.url}/docs?token=s3cret", timeout=30).text
        assert "/openapi.json?token=s3cret" in docs
        assert requests.get(f"{s.url}/health?token=s3cre", timeout=30).status_code == 401
        assert requests.get(f"{s.url}/health?token=s3cret!", timeout=30).status_code == 401
    finally:
        s.stop()

    s = _serve(idx)  # no token, loopback: the Host header is what stops a rebound DNS name
    try:
        for host, status in (("evil.example", 421), ("evil.example:8000", 421), (f"localhost:{s.port}", 200),
                             (f"127.0.0.1:{s.port}", 200), (f"[::1]:{s.port}", 200)):  # fmt: skip
            r = requests.get(f"{s.url}/health", headers={"Host": host}, timeout=30)
            assert r.status_code == status, (host, r.status_code)
        page = requests.get(f"{s.url}/", timeout=30)
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
    finally:
        s.stop()


# -- slow clients ----------------------------------------------------------------------------------------------
def test_silent_and_dripping_connections_are_closed(served, monkeypatch) -> None:
    import mmsearch.server.protocol

    monkeypatch.setattr(mmsearch.server.protocol, "HEADER_TIMEOUT_S", 1.0)
    _, _, s = served
    silent = socket.create_connection(("127.0.0.1", s.port))
    drip = socket.create_connection(("127.0.0.1", s.port))
    t0 = time.monotonic()
    drip.sendall(b"GET /health HTTP/1.1\r\n")
    silent.settimeout(10)
    assert silent.recv(100) == b""  # closed by the server, not by our timeout
    closed_after = time.monotonic() - t0
    assert closed_after < 5, closed_after
    drip.settimeout(10)
    try:
        for _ in range(20):
            drip.sendall(b"X")  # a header, a byte at a time
            time.sleep(0.2)
        end = drip.recv(100)
    except OSError:
        end = b""
    assert end == b"", end
    assert requests.get(f"{s.url}/health", timeout=10).status_code == 200  # and normal clients still get in


# -- memory: decoded pixels are bounded, and given back -------------------------------------------------------
def _status(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith(key)).split()[1]) / 1024


def test_concurrent_huge_image_queries_stay_bounded_and_memory_is_given_back(library) -> None:
    _, idx = library
    arr = np.full((9000, 9000, 3), (200, 20, 20), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    del arr
    body = {"parts": [{"kind": "image", "data": base64.b64encode(buf.getvalue()).decode()}], "k": 3}
    port = free_port()
    proc = subprocess.Popen(
        [*FAKE_CLI, "serve", "--index", str(idx), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        before = _status(proc.pid, "VmRSS")
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: requests.post(f"{url}/search", json=body, timeout=120), range(6)))
        assert all(r.status_code == 200 for r in codes), [r.text[:200] for r in codes]
        assert Path(codes[0].json()[0]["path"]).name == "a.png"  # the red one
        peak, after = _status(proc.pid, "VmHWM"), _status(proc.pid, "VmRSS")
        print(f"\nserver: {before:.0f} MiB before, peak {peak:.0f} MiB, {after:.0f} MiB after 6 x 9000^2 queries")
        assert peak - before < 1024, (before, peak)  # 725 MB -> 4.7 GB before
        assert after - before < 400, (before, after)  # and not kept
    finally:
        proc.terminate()
        proc.wait(30)
