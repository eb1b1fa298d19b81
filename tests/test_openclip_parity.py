"""mmsearch's OpenCLIP backend returns exactly open_clip's own embeddings (random init, offline), its text tower
in ONNX Runtime too, and a text query over an OpenCLIP index never imports torch or open_clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch import Engine
from mmsearch.encoders import clear_cache, load_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vit_b32_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "vit-b-32-random.pt"
    torch.save(model.state_dict(), path)
    return path, model, preprocess


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(autouse=True)
def shared_exports(export_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One user cache dir for the module: the text tower is exported once (~10 s), not once per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(export_cache))


def real_photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee()), Image.fromarray(data.astronaut())]


def test_embeddings_equal_open_clip_encode_plus_normalise(vit_b32_checkpoint) -> None:
    import open_clip
    import torch

    path, model, preprocess = vit_b32_checkpoint
    clear_cache()
    enc = load_encoder(f"openclip:ViT-B-32@{path}")
    assert enc.name == f"openclip:ViT-B-32@{path}" and enc.dim == 512
    assert enc.modalities == {"text", "image"}

    photos = real_photos()
    texts = ["a photo of a cat", "a cup of coffee", "an astronaut"]
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        want_img = model.encode_image(torch.stack([preprocess(p) for p in photos]), normalize=True).numpy()
        want_txt = model.encode_text(tokenizer(texts), normalize=True).numpy()
    got_img, got_txt = enc.encode_image(photos), enc.encode_text(texts)
    assert got_img.dtype == np.float32 and got_img.flags["C_CONTIGUOUS"]
    assert np.abs(got_img - want_img).max() <= 1e-5
    assert np.abs(got_txt - want_txt).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got_img, axis=1), 1.0, atol=1e-5)
    # not a degenerate model: the three photos get different vectors
    assert np.abs(got_img[0] - got_img[1]).max() > 1e-3


def test_openclip_model_indexes_and_finds_real_photos(vit_b32_checkpoint, tmp_path: Path) -> None:
    import shutil

    path = Path(shutil.copy(vit_b32_checkpoint[0], tmp_path / "ckpt.pt"))
    root = tmp_path / "photos"
    root.mkdir()
    for i, im in enumerate(real_photos()):
        im.save(root / f"p{i}.jpg", quality=95)
    model = f"openclip:ViT-B-32@{path}"
    with Engine.open(tmp_path / "idx", model=model, create=True) as eng:
        report = eng.index([root])
        assert report.added == 3
        info = eng.info()
        assert info.model == model and info.dim == 512
        hits = eng.search(image=root / "p1.jpg", k=3)
        assert Path(hits[0].path).name == "p1.jpg" and hits[0].score > 0.999
    # another checkpoint of the same architecture under the same name is refused
    import torch

    other = torch.load(path)
    other["logit_scale"] = other["logit_scale"] + 1.0
    other["visual.proj"] = other["visual.proj"] * 1.5
    torch.save(other, path)
    clear_cache()
    with Engine.open(tmp_path / "idx") as eng, pytest.raises(Exception, match="different weights"):
        eng.search(text="a cat")


def test_openclip_base_trains_through_the_same_code_path(vit_b32_checkpoint, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import write_split

    from mmsearch.encoders import load_encoder
    from mmsearch.evaluation import load_pairs
    from mmsearch.training.train import TrainConfig, train

    train_csv, _ = write_split(tmp_path / "scenes", per_combo=1, held_pairs=20)  # 4 colour-shape pairs x 4
    base = f"openclip:ViT-B-32@{vit_b32_checkpoint[0]}"
    report = train(load_pairs(train_csv), tmp_path / "m", TrainConfig(base=base, epochs=2, batch_size=8))
    assert [h.epoch for h in report.history] == [1, 2] and report.pairs_per_second > 0
    enc = load_encoder(str(tmp_path / "m"))
    assert enc.dim == 512 and enc.name == str((tmp_path / "m").resolve())
    from PIL import Image

    vec = enc.encode_image([Image.new("RGB", (64, 64), (200, 20, 20))])
    assert vec.shape == (1, 512) and abs(float((vec**2).sum()) - 1.0) < 1e-5


HOSTILE = [
    "a dog", "", "   ", "A Photo of a CAT!!", "naïve café résumé", "日本語のテキスト", "emoji 🐶🐱 party 🎉",
    "&amp;amp; tom &amp; jerry &lt;b&gt;", "<b>bold</b> &amp;", "it's they're we've I'm you'll he'd",
    "123456 3.14 1,000", "\x00null\x07bell\x1b[31mred\x1b[0m", "tab\there\r\nnew\x0bline\x0cff",
    "mojibake: Ã©tÃ© cafÃ©", "ﬁne ligatures ｆｕｌｌ", "“curly quotes” and ‘single’", "word " * 100,
    "<start_of_text> inside <end_of_text>", "x" * 500, "\u200bzero\u200bwidth", "a\u00a0nbsp\u2028ls",
    "Ωmega ΣIGMA straße İstanbul", "e\u0301 combining", "\ud800 a lone surrogate", "a-b_c/d\\e|f",
]  # fmt: skip


def test_the_torch_free_tokenizer_gives_open_clips_token_ids(tmp_path: Path) -> None:
    import open_clip

    from mmsearch.encoders.clip_tokenizer import ClipTokenizer, save

    want = open_clip.get_tokenizer("ViT-B-32")
    save(want, tmp_path / "clip.tokenizer.json")
    got = ClipTokenizer(tmp_path / "clip.tokenizer.json")
    np.testing.assert_array_equal(got(HOSTILE), want(HOSTILE).numpy())  # one batch
    for text in HOSTILE:  # and one at a time
        np.testing.assert_array_equal(got([text]), want([text]).numpy(), err_msg=repr(text))
    assert got(["word " * 100])[0, -1] == want.eot_token_id  # truncated, the end token kept


def test_the_text_tower_runs_in_onnx_with_open_clips_vectors(vit_b32_checkpoint) -> None:
    import open_clip
    import torch

    from mmsearch.encoders import onnx_towers
    from mmsearch.encoders.openclip import _kind

    path, model, preprocess = vit_b32_checkpoint
    clear_cache()
    loaded = load_encoder(f"openclip:ViT-B-32@{path}")  # torch: exports the text tower (or finds it exported)
    clear_cache()
    enc = load_encoder(f"openclip:ViT-B-32@{path}")  # what a later process gets
    assert enc._model is None and enc._session is not None  # no torch weights loaded
    assert (enc.fingerprint, enc.dim, enc.image_size) == (loaded.fingerprint, 512, 224)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = [*HOSTILE, *[f"a photo of a {w} on a table" for w in ["cat", "cup", "red car", "child"] * 10]]
    with torch.no_grad():
        want = model.encode_text(tokenizer(texts), normalize=True).numpy()
    for batch in (slice(None), slice(0, 1), slice(6, 7), slice(16, 17), slice(20, 30)):  # lengths 3..77
        got = enc.encode_text(texts[batch])
        assert got.dtype == np.float32 and got.shape == want[batch].shape
        assert np.sum(got * want[batch], axis=1).min() >= 1 - 1e-5
        assert np.abs(got - want[batch]).max() <= 1e-5
    # a picture loads the weights then, checked against the export's fingerprint
    photos = real_photos()
    with torch.no_grad():
        want_img = model.encode_image(torch.stack([preprocess(p) for p in photos]), normalize=True).numpy()
    assert np.abs(enc.encode_image(photos) - want_img).max() <= 1e-5 and enc._model is not None

    # a damaged export (a disk that filled mid-write) is dropped, the weights load, the export is made again
    onnx = onnx_towers.cache_file(_kind("ViT-B-32"), enc.fingerprint)
    (data,) = onnx.parent.glob(onnx.name + ".*.data")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    clear_cache()
    again = load_encoder(f"openclip:ViT-B-32@{path}")
    assert again._model is not None and again._session is not None
    assert np.abs(again.encode_text(texts[:5]) - want[:5]).max() <= 1e-5
    clear_cache()
    assert load_encoder(f"openclip:ViT-B-32@{path}")._model is None  # and the next process finds it whole


def test_a_text_query_over_an_openclip_index_imports_no_torch(
    vit_b32_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_onnx_towers import _cli

    path = vit_b32_checkpoint[0]
    root = tmp_path / "photos"
    root.mkdir()
    for i, im in enumerate(real_photos()):
        im.save(root / f"p{i}.jpg", quality=95)
    (root / "cat.txt").write_text("a photo of a cat")
    model = f"openclip:ViT-B-32@{path}"
    with Engine.open(tmp_path / "idx", model=model, create=True) as eng:
        assert eng.index([root]).added == 4
    query = ["query", "a photo of a cat", "--index", str(tmp_path / "idx"), "--json", "-k", "4", "--target", "any"]
    cold = _cli(query, {**os.environ, "COLUMNS": "200"}, probe=True)
    assert cold.returncode == 0, cold.stderr[-3000:]
    assert json.loads(cold.stderr.split("IMPORTED ", 1)[1].splitlines()[0]) == []
    hits = [(Path(h["path"]).name, h["score"]) for h in json.loads(cold.stdout)]
    monkeypatch.setenv("MMSEARCH_ONNX", "0")  # the same query in torch, in this process
    clear_cache()
    with Engine.open(tmp_path / "idx") as eng:
        in_torch = [(Path(h.path).name, h.score) for h in eng.search(text="a photo of a cat", k=4, target="any")]
        assert eng.towers.need("text")._model is not None  # type: ignore[attr-defined]
    assert len(hits) == 4 and [n for n, _ in hits] == [n for n, _ in in_torch]
    assert max(abs(a - b) for (_, a), (_, b) in zip(hits, in_torch, strict=True)) <= 1e-5
    assert hits[0][0] == "cat.txt"  # the note with the query's own words, whatever the random weights


def test_an_architecture_that_cannot_be_exported_is_not_retried_by_every_process(
    vit_b32_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from mmsearch.encoders import onnx_towers

    path = tmp_path / "same-weights.pt"
    os.link(vit_b32_checkpoint[0], path)  # another file: its own record, its own attempt
    tries: list[str] = []

    def failing(kind: str, *args: object, **kwargs: object) -> bool:
        tries.append(kind)
        return False  # as for an operator ONNX lacks

    monkeypatch.setattr(onnx_towers, "export", failing)
    monkeypatch.setattr(onnx_towers, "cache_file", lambda kind, fp: tmp_path / "exports" / f"{kind}-{fp}.onnx")
    clear_cache()
    first = load_encoder(f"openclip:ViT-B-32@{path}")
    assert tries == ["openclip-text-ViT-B-32"] and first._session is None  # text stays in torch
    want = first.encode_text(["a red car"])
    clear_cache()
    again = load_encoder(f"openclip:ViT-B-32@{path}")
    assert tries == ["openclip-text-ViT-B-32"] and again._model is not None  # not tried again
    np.testing.assert_array_equal(again.encode_text(["a red car"]), want)
