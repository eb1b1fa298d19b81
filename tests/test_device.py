"""`--device`: where models and FAISS run. The GPU path runs where a GPU is (the one skip the suite allows)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import solid
from typer.testing import CliRunner

from mmsearch import device
from mmsearch.cli import app
from mmsearch.errors import MmsearchError

runner = CliRunner()


def test_device_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(device.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert device.requested() == "auto"
    device.set_device("cuda:1")
    assert device.requested() == "cuda:1"
    with pytest.raises(MmsearchError, match="unknown device 'tpu'"):
        device.set_device("tpu")
    assert device.requested() == "cuda:1"  # a bad name leaves the setting as it was
    device.set_device("cpu")
    assert device.faiss_gpus() == 0  # cpu keeps FAISS off the GPU too


def test_asking_for_a_gpu_where_there_is_none_is_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(device.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine too
    solid(tmp_path / "lib" / "a.png", "red")
    out = runner.invoke(app, ["index", str(tmp_path / "lib"), "--model", "builtin", "--device", "cuda", "--json"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == [
        "Error: --device cuda: torch sees no GPU (a CUDA build of torch and a driver are needed)"
    ]
    bad = runner.invoke(app, ["query", "red", "--device", "gpu0"])
    assert bad.exit_code == 1 and "unknown device 'gpu0'" in bad.output


def _gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _gpu(), reason="no GPU here: the GPU path runs on machines that have one")
def test_gpu_path_gives_the_cpu_answers(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsearch import Engine, encoders

    root = tmp_path / "notes"
    root.mkdir()
    for i, text in enumerate(["a red car", "the blue sea", "green trees in a park", "a cat asleep", "snow"]):
        (root / f"{i}.txt").write_text(text)
    solid(root / "red.png", "red")
    answers = {}
    for dev in ("cpu", "cuda"):
        monkeypatch.setenv(device.ENV, dev)
        encoders.clear_cache()
        idx = tmp_path / f"idx-{dev}"
        out = runner.invoke(app, ["index", str(root), "--index", str(idx), "--model", "minilm", "--json"])
        assert out.exit_code == 0, out.output
        with Engine.open(idx) as eng:
            if dev == "cuda":
                assert eng.encoder.device.startswith("cuda")  # the text tower ran in torch on the GPU
            hits = eng.search("the ocean", target="text", k=5)
            answers[dev] = [(h.path.split("/")[-1], h.score) for h in hits]
            if dev == "cuda" and device.faiss_gpus():  # mmsearch[gpu]: FAISS searched a GPU clone
                vi = eng.spaces.get("text")
                assert vi._searcher() is not vi.index
    assert [p for p, _ in answers["cuda"]] == [p for p, _ in answers["cpu"]]
    np.testing.assert_allclose([s for _, s in answers["cuda"]], [s for _, s in answers["cpu"]], atol=1e-3)
