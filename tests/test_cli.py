"""The CLI in-process (typer's CliRunner) over real files, and its promises to scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmsearch.cli import app

runner = CliRunner()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def test_index_then_query_json_paths_and_table(photos: Path, isolated_dirs: Path) -> None:
    out = run("index", str(photos), "--model", "fake", "--json").stdout
    report = json.loads(out)
    assert report["added"] == 9 and report["counts"] == {"image": 7, "text": 2}
    assert report["index"] == str(isolated_dirs)  # $MMSEARCH_INDEX is the default index

    hits = json.loads(run("query", "red", "--json", "-k", "3").stdout)
    assert [Path(h["path"]).name for h in hits][0] == "red.jpg"
    assert set(hits[0]) == {"id", "rank", "score", "path", "modality", "metadata"}
    assert hits[0]["rank"] == 1 and hits[0]["modality"] == "image"
    # fused score: the picture's cosine plus what its file name ("red") adds
    assert isinstance(hits[0]["id"], int) and hits[0]["score"] > hits[1]["score"]
    assert hits[0]["metadata"]["width"] == 64

    paths = run("query", "blue", "--paths-only", "-k", "2").stdout.splitlines()
    assert len(paths) == 2 and paths[0].endswith("blue.jpg")

    table = run("query", "--image", str(photos / "green.jpg"), "-k", "1").stdout
    assert "green.jpg" in table and "1.000" in table

    text_hits = json.loads(run("query", "the sea", "--target", "text", "--json").stdout)
    assert Path(text_hits[0]["path"]).name == "blue.md"

    again = json.loads(run("index", str(photos), "--json").stdout)
    assert (again["added"], again["unchanged"]) == (0, 9)


def test_info_and_models(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    run("index", str(photos), "--model", "fake", "--index", str(idx), "-q")
    info = json.loads(run("info", "--index", str(idx), "--json").stdout)
    assert info["model"] == "fake" and info["dim"] == 32 and info["counts"] == {"image": 7, "text": 2}
    # own vectors, and the pictures' file-name words ("red.jpg") in their own space
    assert info["recipes"] == {"image": "flat", "text": "flat", "image.name": "flat", "image.caption": "flat"}
    assert info["size_bytes"] > 0
    table = run("info", "--index", str(idx)).stdout
    assert "fake" in table and "7 items" in table
    models = json.loads(run("models", "--json").stdout)
    names = [m["name"] for m in models]
    assert "minilm" in names and "openclip:ViT-B-32/laion2b_s34b_b79k" in names
    assert next(m for m in models if m["name"] == "builtin")["note"].startswith("default")
    assert len(json.loads(run("models", "--all", "--json").stdout)) > len(models) + 50


def test_skips_are_reported_one_line_each(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    (root / "zero.jpg").write_bytes(b"")
    (root / "ok.txt").write_text("fine")
    result = run("index", str(root), "--model", "fake", "--index", str(tmp_path / "i"), code=3)
    assert f"skipping {root / 'zero.jpg'}: empty file" in result.stderr
    assert "skipped 1" in result.stdout  # and exit status 3: finished, with skips
    (root / "zero.jpg").unlink()
    run("index", str(root), "--index", str(tmp_path / "i"), code=0)


def test_a_second_index_run_refuses_while_one_writes(photos: Path, tmp_path: Path) -> None:
    from mmsearch.lock import IndexLock

    idx = tmp_path / "i"
    run("index", str(photos), "--model", "fake", "--index", str(idx), "-q")
    with IndexLock(idx):  # another run holds the index
        result = run("index", str(photos), "--index", str(idx), code=1)
        assert "another `mmsearch index`" in result.stderr and f"pid {os.getpid()}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        # queries need no lock: they read SQLite's last committed state
        assert json.loads(run("query", "red", "--index", str(idx), "--json").stdout)[0]["path"].endswith("red.jpg")
    run("index", str(photos), "--index", str(idx), "-q")  # released: runs again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "x", "--index", "{tmp}/none"], "no index at"),
        (["index", "{tmp}/does-not-exist", "--model", "fake", "--index", "{tmp}/i"], "no such file or folder"),
        (["index", "{tmp}", "--model", "nope:thing", "--index", "{tmp}/i2"], "unknown model 'nope:thing'"),
        (["index", "{tmp}", "--model", "openclip:ViT-B-32", "--index", "{tmp}/i3"], "bad OpenCLIP model"),
        (["index", "{tmp}", "--model", "openclip:NoSuchNet@/x.pt", "--index", "{tmp}/i4"], "unknown OpenCLIP"),
        (["index", "{tmp}", "--model", "fake", "--recipe", "hnsw9", "--index", "{tmp}/i5"], "unknown recipe"),
        (["index", "{tmp}", "--model", "{tmp}/no-model-dir", "--index", "{tmp}/i6"], "model directory not found"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_model_mismatch_and_bad_query_image_from_the_cli(photos: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    run("index", str(photos), "--model", "fake", "--index", idx, "-q")
    result = run("index", str(photos), "--model", "fake2", "--index", idx, code=1)
    assert "built with model 'fake'" in result.stderr
    result = run("query", "--image", str(photos / "notes" / "red-note.txt"), "--index", idx, code=1)
    assert "cannot use" in result.stderr
    result = run("query", "--index", idx, code=1)
    assert "nothing to search for" in result.stderr


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from mmsearch.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "[CliRunner().invoke(app, [c, '--help']) for c in ('index', 'query', 'info', 'models', 'eval', 'train')]; "
        "heavy = [m for m in ('torch', 'faiss', 'open_clip', 'sentence_transformers', 'sqlalchemy', 'numpy') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
