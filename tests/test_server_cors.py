"""Browsers and scripts as clip-retrieval's clients send them: CORS for named origins, JSON bodies read
whatever their Content-Type says (issue 18, first part)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import solid
from serving import Server
from typer.testing import CliRunner

from mmsearch.cli import app as cli_app

runner = CliRunner()
FRONT = "http://front.example:3000"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import FakeEncoder

    from mmsearch import encoders

    fake = FakeEncoder()
    encoders.register("fake-cors", lambda spec: fake)
    lib, idx = tmp_path_factory.mktemp("cors-lib"), tmp_path_factory.mktemp("cors-idx")
    for colour in ("red", "blue", "green"):
        solid(lib / f"{colour}.jpg", colour)
    assert (
        runner.invoke(cli_app, ["index", str(lib), "--index", str(idx), "--model", "fake-cors:", "-q"]).exit_code == 0
    )
    return idx


def serve(index: Path, **options: object) -> Server:
    from mmsearch.server import create_app

    return Server(create_app(index, **options))


@pytest.fixture
def cors(index: Path) -> Iterator[Server]:
    s = serve(index, cors_origins=[FRONT])
    yield s
    s.stop()


def preflight(server: Server, origin: str, path: str = "/knn-service") -> requests.Response:
    return requests.options(
        server.url + path,
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"},
        timeout=10,
    )  # fmt: skip


def test_a_named_origin_gets_preflights_and_cors_headers_others_do_not(cors: Server) -> None:
    ok = preflight(cors, FRONT)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == FRONT
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = preflight(cors, "http://evil.example")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    r = requests.post(
        cors.url + "/knn-service", json={"text": "red", "num_images": 2}, headers={"Origin": FRONT}, timeout=30
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == FRONT
    assert Path(r.json()[0]["image_path"]).name == "red.jpg"
    r = requests.post(
        cors.url + "/knn-service", json={"text": "red"}, headers={"Origin": "http://evil.example"}, timeout=30
    )
    assert "access-control-allow-origin" not in r.headers  # answered (a server cannot stop it), unreadable


def test_no_origin_is_allowed_by_default(index: Path) -> None:
    s = serve(index)
    try:
        r = preflight(s, FRONT)
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    finally:
        s.stop()


def test_with_a_token_the_preflight_passes_and_the_request_still_needs_it(index: Path) -> None:
    s = serve(index, cors_origins=[FRONT], token="s3cret")
    try:
        assert preflight(s, FRONT).status_code == 200  # browsers send no Authorization on a preflight
        bare = requests.post(s.url + "/knn-service", json={"text": "red"}, headers={"Origin": FRONT}, timeout=30)
        assert bare.status_code == 401 and bare.headers["access-control-allow-origin"] == FRONT  # readable error
        auth = {"Origin": FRONT, "Authorization": "Bearer s3cret"}
        good = requests.post(s.url + "/knn-service", json={"text": "red"}, headers=auth, timeout=30)
        assert good.status_code == 200 and good.json()
    finally:
        s.stop()


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None])
def test_json_bodies_are_read_whatever_the_content_type(cors: Server, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    hits = requests.post(cors.url + "/knn-service", data=json.dumps({"text": "blue"}), headers=headers, timeout=30)
    assert hits.status_code == 200
    first = hits.json()[0]["id"]
    meta = requests.post(cors.url + "/metadata", data=json.dumps({"ids": [first]}), headers=headers, timeout=30)
    assert meta.status_code == 200, meta.text
    assert Path(meta.json()[0]["metadata"]["image_path"]).name == "blue.jpg"
    emb = requests.post(
        cors.url + "/v1/embeddings", data=json.dumps({"input": ["blue", "red"]}), headers=headers, timeout=30
    )
    assert emb.status_code == 200 and len(emb.json()["data"]) == 2
    search = requests.post(
        cors.url + "/search", data=json.dumps({"text": "green", "k": 1}), headers=headers, timeout=30
    )
    assert search.status_code == 200 and Path(search.json()[0]["path"]).name == "green.jpg"
    bad = requests.post(cors.url + "/search", data="not json", headers=headers, timeout=30)
    assert bad.status_code == 422  # still a one-line JSON error, never a 500


def test_serve_takes_cors_origins_from_the_command_line() -> None:
    result = runner.invoke(cli_app, ["serve", "--help"])
    assert "--cors-origin" in result.output
