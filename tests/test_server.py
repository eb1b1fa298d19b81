"""`mmsearch serve`: the real server on 127.0.0.1, driven by real clients (clip-retrieval, openai, requests)."""

from __future__ import annotations

import base64
import importlib.util
import io
import shutil
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

from mmsearch import Engine
from mmsearch.cli import app as cli_app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("served")
    for name in ("cat.png", "coffee.png", "rocket.jpg", "motorcycle.png", "astronaut.png"):
        Image.open(sources()[name]).convert("RGB").save(root / name)
    (root / "pasta.md").write_text("# Weeknight pasta\nBoil salted water, cook spaghetti for nine minutes.")
    shutil.copy(DATA / "speech" / "budget.ogg", root / "budget.ogg")
    index = tmp_path_factory.mktemp("served-index")
    assert runner.invoke(cli_app, ["index", str(root), "--index", str(index), "-q"]).exit_code == 0
    return root, index


@pytest.fixture(scope="module")
def server(library) -> Iterator[Server]:
    from mmsearch.server import create_app

    s = Server(create_app(library[1]))
    yield s
    s.stop()


def clip_client_class():
    """clip-retrieval's ClipClient, unchanged, loaded from the installed package's file (its package
    __init__ pulls its own server's dependencies, which a client does not need)."""
    spec = importlib.util.find_spec("clip_retrieval")
    assert spec and spec.submodule_search_locations, "pip install --no-deps clip-retrieval"
    path = Path(spec.submodule_search_locations[0]) / "clip_client.py"
    module_spec = importlib.util.spec_from_file_location("clip_client", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ClipClient, module.Modality


def test_clip_retrieval_client_works_unchanged(server: Server, library) -> None:
    root, index = library
    ClipClient, Modality = clip_client_class()
    indices = requests.get(f"{server.url}/indices-list", timeout=30).json()
    client = ClipClient(url=f"{server.url}/knn-service", indice_name=indices[0], num_images=3)
    hits = client.query(text="a cat")
    assert Path(hits[0]["image_path"]).name == "cat.png"
    assert {"id", "similarity", "caption", "url", "image"} <= set(hits[0])
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    thumb = Image.open(io.BytesIO(base64.b64decode(hits[0]["image"])))
    assert max(thumb.size) <= 320
    assert requests.get(hits[0]["url"], timeout=30).content == (root / "cat.png").read_bytes()
    hits = client.query(image=str(sources()["coffee.png"]))
    assert Path(hits[0]["image_path"]).name == "coffee.png"
    # embedding_input is L2-normalised: a scaled vector finds the same thing
    with Engine.open(index) as eng:
        vec = (eng.embed_text(["a rocket"])[0] * 7.5).tolist()
    hits = client.query(embedding_input=vec)
    assert Path(hits[0]["image_path"]).name == "rocket.jpg"
    text_client = ClipClient(url=f"{server.url}/knn-service", indice_name=indices[0], modality=Modality.TEXT)
    assert Path(text_client.query(text="how to cook spaghetti")[0]["image_path"]).name == "pasta.md"
    meta = requests.post(f"{server.url}/metadata", json={"ids": [hits[0]["id"], 999999]}, timeout=30).json()
    assert [m["id"] for m in meta] == [hits[0]["id"]] and meta[0]["metadata"]["image_path"].endswith("rocket.jpg")


def test_knn_service_errors_are_json(server: Server) -> None:
    url = f"{server.url}/knn-service"
    for body, status in (
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"text": "a cat", "indice_name": "laion5B"}', 404),
        (b'{"text": "a cat", "modality": "hologram"}', 400),
        (b'{"image_url": "http://example.com/x.jpg"}', 403),
        (b'{"embedding_input": [1, 2, 3]}', 400),
        (b'{"text": "a cat", "num_images": -4}', 400),
        (b'{"text": null, "image": null}', 400),
    ):
        r = requests.post(url, data=body, timeout=30)  # no Content-Type, like ClipClient
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"].startswith("application/json") and "detail" in r.json()


def test_openai_client_embeddings_equal_the_engine(server: Server, library) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    texts = ["a cat on a sofa", "quarterly budget"]
    got = client.embeddings.create(model="builtin", input=texts)
    with Engine.open(library[1]) as eng:
        want = eng.embed_text(texts)
    assert [d.index for d in got.data] == [0, 1]
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-6)
    one = client.embeddings.create(model="builtin", input="a cat on a sofa", encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, want[0], atol=1e-6)


def test_native_api(server: Server, library) -> None:
    root, _ = library
    url = server.url
    assert requests.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    assert requests.get(f"{url}/info", timeout=30).json()["counts"] == {"image": 5, "text": 1, "audio": 1}
    hits = requests.post(f"{url}/search", json={"text": "a motorcycle", "k": 2}, timeout=30).json()
    assert Path(hits[0]["path"]).name == "motorcycle.png" and len(hits) == 2
    picture = base64.b64encode((root / "coffee.png").read_bytes()).decode()
    hits = requests.post(
        f"{url}/search", json={"parts": [{"kind": "image", "data": picture}], "k": 1, "explain": True}, timeout=30
    ).json()
    assert Path(hits[0]["path"]).name == "coffee.png" and hits[0]["explain"]
    spoken = base64.b64encode((DATA / "speech" / "budget.ogg").read_bytes()).decode()
    hits = requests.post(f"{url}/search", json={"parts": [{"kind": "audio", "data": spoken}]}, timeout=60).json()
    assert Path(hits[0]["path"]).name == "budget.ogg" and "budget" in hits[0]["metadata"]["match"]["text"]
    item = requests.get(f"{url}/items/{hits[0]['id']}", timeout=30).json()
    assert item["modality"] == "audio" and item["path"].endswith("budget.ogg")
    vec = requests.post(f"{url}/embed", json={"text": ["a cat"]}, timeout=30).json()
    assert vec["dim"] == 384 and abs(np.linalg.norm(vec["vectors"][0]) - 1) < 1e-5
    vec = requests.post(f"{url}/embed", json={"image": picture}, timeout=30).json()
    assert len(vec["vectors"]) == 1
    for bad in ("/items/999999", "/items/999999/file", "/items/abc", "/items/..%2F..%2Fetc%2Fpasswd/file"):
        r = requests.get(f"{url}{bad}", timeout=30)
        assert r.status_code in (404, 422) and r.headers["content-type"].startswith("application/json"), bad
    for body in ({"text": "a cat", "k": 0}, {"text": "a cat", "k": -3}, {"text": "a cat", "k": 10**9}, {"k": "x"}):
        r = requests.post(f"{url}/search", json=body, timeout=30)
        assert r.status_code == 422 and "detail" in r.json(), body
    r = requests.post(f"{url}/search", json={"text": "cat + "}, timeout=30)
    assert r.status_code == 400 and "empty term" in r.json()["detail"]
    r = requests.post(f"{url}/search", json={"text": "a cat", "target": "hologram"}, timeout=30)
    assert r.status_code == 400
    r = requests.post(f"{url}/search", json={"text": "a cat", "target": "video"}, timeout=30)
    assert r.status_code == 200 and r.json() == []  # a kind the index has none of: no results, no error
    r = requests.post(f"{url}/search", data=b"x" * (26 * 1024 * 1024), timeout=60)
    assert r.status_code == 413
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and "<title>mmsearch</title>" in page.text
    assert "/knn-service" in requests.get(f"{url}/openapi.json", timeout=30).text


def test_a_token_guards_every_route(library) -> None:
    from mmsearch.server import create_app

    s = Server(create_app(library[1], token="s3cret"))
    try:
        for path in ("/health", "/info", "/items/1", "/indices-list"):
            assert requests.get(f"{s.url}{path}", timeout=30).status_code == 401, path
        assert requests.post(f"{s.url}/knn-service", data=b'{"text": "a cat"}', timeout=30).status_code == 401
        ok = requests.get(f"{s.url}/health", headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert ok.status_code == 200
        assert requests.get(f"{s.url}/health?token=s3cret", timeout=30).status_code == 200  # for <img src>
    finally:
        s.stop()


def test_schemathesis_finds_no_server_error(server: Server) -> None:
    import subprocess
    import sys

    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "25",
         "--request-timeout", "60", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]


ARTIFACTS = Path(__file__).parent / "artifacts"


def wait_js(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is true. (``page.wait_for_function`` compiles its predicate inside the
    page, which the page's Content-Security-Policy rightly forbids; ``evaluate`` runs from outside.)"""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        assert time.time() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def test_the_search_page_in_a_headless_browser(server: Server) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the page test drives Debian's chromium: apt install chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(server.url)
            page.fill("#q", "a motorcycle")
            page.press("#q", "Enter")
            page.wait_for_selector(".hit")
            first = page.locator(".hit").first
            assert first.locator(".name").inner_text() == "motorcycle.png"
            wait_js(page, "document.querySelector('.hit img').naturalWidth > 0")  # the thumbnail loaded
            assert first.get_attribute("href").endswith("/file")
            page.screenshot(path=str(ARTIFACTS / "search-page.png"))
            page.click("text=Notes")  # modality tab
            page.fill("#q", "cooking dinner")
            page.press("#q", "Enter")
            wait_js(page, "document.querySelector('.hit .name')?.textContent === 'pasta.md'")
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(f"{server.url}/?q=a%20cat")
            phone.wait_for_selector(".hit")
            assert phone.locator(".hit .name").first.inner_text() == "cat.png"
            box = phone.locator(".hit").first.bounding_box()
            assert box is not None and box["width"] < 390 / 2  # two columns on a phone
            phone.screenshot(path=str(ARTIFACTS / "search-page-phone.png"))
            assert not errors, errors  # nothing the page does is refused by its Content-Security-Policy
        finally:
            browser.close()
    assert (ARTIFACTS / "search-page.png").stat().st_size > 10_000


def test_the_api_docs_render_with_no_network(server: Server) -> None:
    """Swagger UI's files come from the server itself (swagger-ui-bundle-v2), never a CDN."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the docs test drives Debian's chromium: apt install chromium"
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()

            def only_loopback(route) -> None:  # noqa: ANN001 - playwright's Route
                if route.request.url.startswith(server.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_loopback)
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            assert page.locator(".swagger-ui .info .title").inner_text().startswith("mmsearch")
            page.wait_for_selector("text=/knn-service")  # the operations rendered from /openapi.json
        finally:
            browser.close()
    assert outside == []


def test_a_phone_searches_by_an_uploaded_photo(server: Server, library, tmp_path: Path) -> None:
    """No drag and drop on a phone: the page's upload button sends the picture, and its twin comes first."""
    from playwright.sync_api import sync_playwright

    root, _ = library
    twin = tmp_path / "IMG_0001.jpg"  # the cat re-encoded at another size: what a phone's camera roll holds
    Image.open(root / "cat.png").convert("RGB").resize((300, 200)).save(twin, quality=80)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the page test drives Debian's chromium: apt install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            errors: list[str] = []
            phone.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            phone.goto(server.url)
            assert phone.locator("#pick-label").is_visible()
            phone.set_input_files("#pick", str(twin))
            wait_js(phone, "document.querySelector('.hit .name')?.textContent === 'cat.png'")
            assert phone.locator("#example img").is_visible()
            assert not errors, errors
        finally:
            browser.close()


def test_a_sound_hit_plays_in_the_page_from_the_moment_that_matched(server: Server) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the page test drives Debian's chromium: apt install chromium"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.click("text=Sounds")
            page.fill("#q", "when is the budget meeting")
            page.press("#q", "Enter")
            wait_js(page, "document.querySelector('.hit audio') !== null")
            assert page.locator(".hit .name").first.inner_text() == "budget.ogg"
            page.evaluate(
                "document.querySelector('.hit audio').muted = true; document.querySelector('.hit audio').play()"
            )
            wait_js(page, "document.querySelector('.hit audio').currentTime > 0.3")  # served with ranges, and it plays
        finally:
            browser.close()
