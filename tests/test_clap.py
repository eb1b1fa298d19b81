"""CLAP through transformers, and composite models (a tower per modality), on a random-init CLAP model."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from tiny_clap import write_tiny_clap
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.encoders import load_encoder, load_towers
from mmsearch.errors import ModelError

runner = CliRunner()
_pygame = importlib.util.find_spec("pygame")
assert _pygame is not None and _pygame.submodule_search_locations, "pip install pygame-ce (test sounds)"
SOUNDS = Path(_pygame.submodule_search_locations[0]) / "examples" / "data"


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_clap_embeddings_equal_transformers_own(clap_dir: Path) -> None:
    import torch
    from transformers import ClapModel, ClapProcessor

    enc = load_encoder(f"clap:{clap_dir}")
    assert (enc.dim, enc.audio_sample_rate, sorted(enc.modalities)) == (16, 48000, ["audio", "text"])
    model, proc = ClapModel.from_pretrained(clap_dir).eval(), ClapProcessor.from_pretrained(clap_dir)
    texts = ["a dog barking", "rain on a roof", "a much longer description of a car engine starting"]
    rng = np.random.default_rng(0)
    t = np.arange(3 * 48000) / 48000
    clips = [
        (0.1 * rng.standard_normal(2 * 48000)).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32),
    ]
    with torch.no_grad():
        tokens = proc.tokenizer(texts, padding=True, return_tensors="pt")
        ref_text = model.get_text_features(**tokens).pooler_output.numpy()
        feats = proc.feature_extractor(clips, sampling_rate=48000, return_tensors="pt")
        ref_audio = model.get_audio_features(**feats).pooler_output.numpy()
    got_text, got_audio = enc.encode_text(texts), enc.encode_audio(clips)
    np.testing.assert_allclose(got_text, _unit(ref_text), atol=1e-5)
    np.testing.assert_allclose(got_audio, _unit(ref_audio), atol=1e-5)
    assert np.all(np.abs(np.linalg.norm(got_audio, axis=1) - 1) < 1e-5)
    # different inputs, different vectors (a tower that ignored its input would pass the rest)
    assert not np.allclose(got_audio[0], got_audio[1], atol=1e-3)
    assert not np.allclose(got_text[0], got_text[1], atol=1e-3)


def test_a_bad_clap_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ModelError, match="cannot load CLAP model"):
        load_encoder(f"clap:{tmp_path / 'nothing'}")


def test_composite_specs_fill_roles_and_refuse_bad_ones(clap_dir: Path) -> None:
    towers = load_towers(f"image=fake,audio=clap:{clap_dir}")
    assert towers.dims() == {"image": 32, "text": 32, "audio": 16, "sound": 16}
    assert towers.same("image", "text") and not towers.same("text", "audio") and towers.same("audio", "sound")
    for bad, message in [
        ("image=fake,image=fake2", "named twice"),
        ("picture=fake", "unknown tower role"),
        ("image=", "expected ROLE=MODEL"),
        (f"image=clap:{clap_dir}", "has no image tower"),
    ]:
        with pytest.raises(ModelError, match=message):
            load_towers(bad)


def test_a_composite_index_keeps_a_space_per_tower_and_queries_each_in_its_own(tmp_path: Path, clap_dir: Path) -> None:
    from PIL import Image

    from mmsearch.server import create_app

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    Image.new("RGB", (64, 64), (220, 20, 20)).save(lib / "red.png")
    Image.new("RGB", (64, 64), (20, 20, 220)).save(lib / "blue.png")
    sounds = ("boom.wav", "whiff.wav", "punch.wav", "secosmic_lo.wav")
    for name in sounds:
        shutil.copy(SOUNDS / name, lib / name)
    (lib / "note.txt").write_text("a red kite over the hills", encoding="utf-8")
    model = f"image=fake,audio=clap:{clap_dir}"
    result = runner.invoke(app, ["index", str(lib), "--index", str(idx), "--model", model])
    assert result.exit_code == 0, result.output

    clap = load_encoder(f"clap:{clap_dir}")
    with Engine.open(idx) as eng:
        assert eng.model_name == model and eng.store.get_meta("dims") == eng.towers.dims()
        counts = {space: eng.store.count(space) for space in ("image", "text", "audio", "audio.sound")}
        assert counts == {"image": 2, "text": 1, "audio": 4, "audio.sound": 4}
        # each space holds its own tower's vectors: pictures 32 numbers, sounds CLAP's 16
        assert eng.vector_ids("audio").size == 4 and eng.spaces.get("audio").dim == 16
        assert eng.spaces.get("image").dim == 32
        # a text query over pictures is the fake model's; over sounds, CLAP's own text tower
        assert eng.search("red", k=1)[0].path.endswith("red.png")
        hits = eng.search("a dog barking", target="audio", k=10)
        assert sorted(Path(h.path).name for h in hits) == sorted(sounds)
        q = clap.encode_text(["a dog barking"])[0]
        own = {h.id: eng.store.vectors_of([h.id], ["audio"])[(h.id, "audio")] for h in hits}
        best = max(own, key=lambda i: float(own[i] @ q))
        assert hits[0].id == best  # ranked by CLAP's text-sound similarity (nothing else in a sound's space)
        # a sound finds itself; the embed API gives vectors in the asked space
        assert Path(eng.search(audio=str(lib / "whiff.wav"), k=1)[0].path).name == "whiff.wav"
        assert eng.embed("text", ["x"]).shape == (1, 32)
        assert eng.embed("text", ["x"], target="audio").shape == (1, 16)
        # any: one ranking of every modality
        assert {h.modality for h in eng.search("a red kite", target="any", k=10)} == {"image", "text", "audio"}

    # a picture cannot be compared with sounds when no tower holds both: one line, not noise
    result = runner.invoke(app, ["query", "--image", str(lib / "red.png"), "--target", "audio", "--index", str(idx)])
    assert result.exit_code == 1 and "cannot compare image with audio" in result.output
    info = runner.invoke(app, ["info", "--index", str(idx), "--json"])
    assert json.loads(info.output)["model"] == model

    from serving import Server

    server = Server(create_app(idx))
    try:
        r = requests.post(f"{server.url}/knn-service", json={"text": "a dog barking", "modality": "audio"}, timeout=60)
        assert r.status_code == 200, r.text
        assert [row["id"] for row in r.json()][:1] == [best]
        r = requests.post(
            f"{server.url}/knn-service", json={"embedding_input": [0.1] * 16, "modality": "audio"}, timeout=60
        )
        assert r.status_code == 200 and len(r.json()) == 4
        r = requests.post(f"{server.url}/embed", json={"text": "a", "target": "audio"}, timeout=60)
        assert r.status_code == 200 and r.json()["dim"] == 16
    finally:
        server.stop()


def test_clap_text_runs_in_onnx_from_its_export_and_sounds_load_the_weights_when_needed(clap_dir: Path) -> None:
    import torch
    from transformers import ClapModel, ClapProcessor

    from mmsearch.encoders import clear_cache

    clear_cache()
    first = load_encoder(f"clap:{clap_dir}")  # loads the weights (and exports the text tower)
    clear_cache()
    enc = load_encoder(f"clap:{clap_dir}")  # what a later process gets
    assert enc.model is None and enc._session is not None  # type: ignore[attr-defined]
    assert (enc.fingerprint, enc.dim, enc.audio_sample_rate) == (first.fingerprint, 16, 48000)
    model, proc = ClapModel.from_pretrained(clap_dir).eval(), ClapProcessor.from_pretrained(clap_dir)
    texts = ["a dog barking", "", "rain on a roof", "über café 🐶 — 東京", "a bell " * 5, "x"]
    for batch in (texts, texts[:1], texts[3:4]):
        with torch.no_grad():
            tokens = proc.tokenizer(batch, padding=True, return_tensors="pt")
            want = _unit(model.get_text_features(**tokens).pooler_output.numpy())
        got = enc.encode_text(batch)
        assert np.sum(got * want, axis=1).min() >= 1 - 1e-5 and np.abs(got - want).max() <= 1e-5
    clip = (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    with torch.no_grad():
        feats = proc.feature_extractor([clip], sampling_rate=48000, return_tensors="pt")
        want_audio = _unit(model.get_audio_features(**feats).pooler_output.numpy())
    np.testing.assert_allclose(enc.encode_audio([clip]), want_audio, atol=1e-5)
    assert enc.model is not None  # type: ignore[attr-defined]
