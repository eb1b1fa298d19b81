"""clip-retrieval's own web front end (clip-front, shipped in the clip-retrieval wheel as ``front/build``),
served on a second loopback port and pointed at `mmsearch serve`, in headless Chromium (issue 18)."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from conftest import FakeEncoder, solid
from serving import Server
from typer.testing import CliRunner

from mmsearch import encoders
from mmsearch.cli import app

runner = CliRunner()


def clip_front() -> Path:
    spec = importlib.util.find_spec("clip_retrieval")
    assert spec and spec.submodule_search_locations, "pip install --no-deps clip-retrieval"
    build = Path(spec.submodule_search_locations[0]).parent / "front" / "build"
    assert (build / "index.html").is_file(), build
    return build


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_clip_front_searches_mmsearch_and_loads_images_captions_and_metadata(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from mmsearch.server import create_app

    fake = FakeEncoder()
    encoders.register("fake-front", lambda spec: fake)
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for colour in ("red", "blue", "green", "yellow"):
        solid(lib / f"{colour}.png", colour, size=(96, 64))
    assert runner.invoke(app, ["index", str(lib), "--index", str(idx), "--model", "fake-front:", "-q"]).exit_code == 0
    front = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(clip_front())))
    threading.Thread(target=front.serve_forever, daemon=True).start()
    front_url = f"http://127.0.0.1:{front.server_address[1]}"
    backend = Server(create_app(idx, cors_origins=[front_url]))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the clip-front test drives Debian's chromium: apt install chromium"
    answers: list[tuple[int, str, str]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.on("response", lambda r: answers.append((r.status, r.request.method, r.url)))
                page.goto(f"{front_url}/?back={quote(backend.url, safe='')}&index=default&query=red")
                first = f"img[src^='{backend.url}/items/']"
                page.wait_for_selector(first, timeout=30_000)  # pierces clip-front's shadow DOM
                deadline = time.time() + 30
                while not page.locator(first).first.evaluate("img => img.complete && img.naturalWidth > 0"):
                    assert time.time() < deadline, "the first image never loaded"
                    time.sleep(0.1)
                assert page.locator(first).first.get_attribute("alt") == "red"  # its caption: the file's name
                deadline = time.time() + 30
                while not any(m == "POST" and u.endswith("/metadata") for _, m, u in answers):
                    assert time.time() < deadline, "clip-front never asked for metadata"
                    time.sleep(0.1)
            finally:
                browser.close()
    finally:
        backend.stop()
        front.shutdown()
    ours = [(s, m, u) for s, m, u in answers if u.startswith(backend.url)]
    assert {(m, u.removeprefix(backend.url)) for s, m, u in ours if s == 200} >= {
        ("POST", "/knn-service"),
        ("POST", "/metadata"),
    }
    assert [a for a in ours if a[0] >= 400] == []
    # the only failures: the vendor scripts clip-retrieval's wheel does not ship
    assert {u.removeprefix(front_url) for s, _, u in answers if s >= 400} <= {
        "/vendor/webcomponents-loader.js",
        "/vendor/custom-elements-es5-adapter.js",
    }
