"""The model a new index gets, and models downloaded from a hub: a loopback server speaking the Hugging
Face Hub protocol serves a random-init CLAP model the test writes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_hub import COMMIT, FakeHub
from tiny_clap import write_tiny_clap
from typer.testing import CliRunner

from mmsearch.cli import app
from mmsearch.encoders import AUTO, choose_default

runner = CliRunner()
_pygame = importlib.util.find_spec("pygame")
assert _pygame is not None and _pygame.submodule_search_locations
SOUNDS = Path(_pygame.submodule_search_locations[0]) / "examples" / "data"


def test_offline_a_new_index_gets_builtin_and_one_line_saying_what_it_would_have_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.txt").write_text("a note about the sea", encoding="utf-8")
    # a "hub" that takes connections and never answers (a stuck proxy): the probe gives up, never retries
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    started = time.perf_counter()
    assert choose_default()[0] == "builtin"
    assert time.perf_counter() - started < 2.0
    silent.close()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refused at once
    result = runner.invoke(app, ["index", str(tmp_path / "lib"), "--index", str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "offline" in lines[0] and f"--model {AUTO}" in lines[0], lines
    assert "MobileCLIP2-S0" in lines[0] and "clap" in lines[0]
    info = json.loads(runner.invoke(app, ["info", "--index", str(tmp_path / "idx"), "--json"]).stdout)
    assert info["model"] == "builtin"
    # an existing index keeps its model, and says nothing about defaults
    again = runner.invoke(app, ["index", str(tmp_path / "lib"), "--index", str(tmp_path / "idx"), "-q"])
    assert again.exit_code == 0 and again.stderr == ""


def _cache(home: Path, repo: str, filename: str) -> None:
    """A file of ``repo`` in the Hugging Face cache layout (what huggingface_hub writes)."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(b"weights")


def test_auto_when_its_weights_are_cached_or_the_hub_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["HF_HOME"])
    _cache(home, "timm/MobileCLIP2-S0-OpenCLIP", "open_clip_model.safetensors")
    assert choose_default()[0] == "builtin"  # one tower of two cached: not enough offline
    _cache(home, "laion/clap-htsat-unfused", "model.safetensors")
    assert choose_default() == (AUTO, None)  # all cached: no network needed, nothing to say
    shutil.rmtree(home / "hub")
    hub = FakeHub({})
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        model, notice = choose_default()
        assert model == AUTO and notice is not None and "downloading" in notice
        assert {m for m, _ in hub.requests} == {"HEAD"}  # deciding downloads nothing
    finally:
        hub.stop()


def test_a_model_downloads_once_into_the_hub_cache_and_later_runs_need_no_network(tmp_path: Path) -> None:
    repo = write_tiny_clap(tmp_path / "repo")
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("boom.wav", "whiff.wav"):
        shutil.copy(SOUNDS / name, lib / name)
    hub = FakeHub({"laion/tiny-clap": repo})
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url}
    cli = [sys.executable, "-m", "mmsearch.cli"]
    model = "audio=clap:laion/tiny-clap"
    try:
        first = subprocess.run(
            [*cli, "index", str(lib), "--index", str(tmp_path / "idx"), "--model", model, "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["counts"] == {"audio": 2}
        got = {p.rsplit("/", 1)[-1] for p in hub.downloads()}
        assert {"config.json", "model.safetensors"} <= got
        blobs = list((tmp_path / "hf" / "hub" / "models--laion--tiny-clap" / "blobs").iterdir())
        assert blobs and not [b for b in blobs if b.name.endswith(".incomplete")]
        assert "Traceback" not in first.stderr and "Loading weights" not in first.stderr  # no library bars
    finally:
        hub.stop()
    offline = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    query = subprocess.run(
        [*cli, "query", "a dog barking", "--target", "audio", "--index", str(tmp_path / "idx"), "--json"],
        env=offline, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    assert sorted(Path(h["path"]).name for h in json.loads(query.stdout)) == ["boom.wav", "whiff.wav"]
    # a model neither cached nor reachable: one line, at once
    missing = subprocess.run(
        [*cli, "index", str(lib), "--index", str(tmp_path / "idx2"), "--model", "audio=clap:laion/other"],
        env=offline, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.startswith("Error: cannot load CLAP model 'laion/other'")
    assert len(missing.stderr.strip().splitlines()) == 1


def _random_mobileclip(folder: Path) -> Path:
    """A random-init MobileCLIP2-S0 in the hub layout open_clip downloads (``open_clip_model.safetensors``)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("MobileCLIP2-S0", pretrained=None)
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous().clone() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors"
    )
    return folder


def test_the_default_downloads_auto_resuming_a_cut_download_then_works_with_sockets_blocked(tmp_path: Path) -> None:
    from PIL import Image

    lib = tmp_path / "lib"
    lib.mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(lib / "red.png")
    Image.new("RGB", (300, 200), (30, 30, 200)).save(lib / "blue.png")
    shutil.copy(SOUNDS / "boom.wav", lib / "boom.wav")
    (lib / "note.txt").write_text("a note about a red barn", encoding="utf-8")
    weights = _random_mobileclip(tmp_path / "mobileclip")
    size = (weights / "open_clip_model.safetensors").stat().st_size
    hub = FakeHub(
        {"timm/MobileCLIP2-S0-OpenCLIP": weights, "laion/clap-htsat-unfused": write_tiny_clap(tmp_path / "clap")},
        cut_once={"open_clip_model.safetensors": size // 3},  # the connection drops a third of the way
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.url,
        "FORCE_COLOR": "1",
        "TTY_INTERACTIVE": "1",
    }
    cli = [sys.executable, "-m", "mmsearch.cli"]
    idx = tmp_path / "idx"
    try:
        first = subprocess.run(
            [*cli, "index", str(lib), "--index", str(idx)], env=env, capture_output=True, text=True, timeout=600
        )
        assert first.returncode == 0, first.stderr[-3000:]
        assert "downloading" in first.stderr and "Traceback" not in first.stderr
        ranged = [h for m, p, h in hub.ranged if p.endswith("open_clip_model.safetensors")]
        assert ranged, hub.requests  # the cut download was resumed, not restarted: from what had arrived
        assert 0 < int(ranged[0].removeprefix("bytes=").split("-")[0]) <= size // 3
    finally:
        hub.stop()
    cached = next(
        (tmp_path / "hf" / "hub" / "models--timm--MobileCLIP2-S0-OpenCLIP" / "snapshots").rglob("*.safetensors")
    )
    assert cached.read_bytes() == (weights / "open_clip_model.safetensors").read_bytes()
    info = json.loads(
        subprocess.run([*cli, "info", "--index", str(idx), "--json"], env=env, capture_output=True, text=True).stdout
    )
    assert (
        info["model"].startswith("image=openclip:MobileCLIP2-S0/dfndr2b,")
        and "clap:laion/clap-htsat-unfused" in info["model"]
    )
    # later runs: every socket refused (a sitecustomize that blocks connect), from the cache alone
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refuse(self, *a, **k):\n"
        "    raise OSError('network blocked by the test')\n"
        "socket.socket.connect = _refuse\nsocket.socket.connect_ex = _refuse\n"
        "socket.getaddrinfo = lambda *a, **k: _refuse(None)\n"
    )
    blocked = {
        **env,
        "PYTHONPATH": f"{block}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "HF_ENDPOINT": "https://huggingface.co",
    }
    # text queries run both text towers (MobileCLIP2's and CLAP's) from their ONNX exports: no torch
    probe = (
        "import runpy, sys\ncode = 0\ntry:\n    runpy.run_module('mmsearch.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\nsys.exit(code)\n"
    )
    for target in ("image", "audio", "any"):
        q = subprocess.run([sys.executable, "-c", probe, "query", "red", "--target", target, "--index", str(idx),
                            "--json"], env=blocked, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert q.returncode == 0 and "NO TORCH" in q.stderr, q.stderr[-2000:]
        assert json.loads(q.stdout), target
    # a picture query: the text tower runs from its ONNX export, the image tower's weights load only now, from
    # the cache alone
    q = subprocess.run([*cli, "query", "--image", str(lib / "red.png"), "--index", str(idx), "--json"], env=blocked,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert q.returncode == 0, q.stderr[-2000:]
    assert Path(json.loads(q.stdout)[0]["path"]).name == "red.png"
    again = subprocess.run(
        [*cli, "index", str(lib), "--index", str(idx), "--json"],
        env=blocked,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == 4, again.stderr[-2000:]
