"""mmsearch's OpenCLIP backend returns exactly open_clip's own embeddings (random init, offline)."""

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
