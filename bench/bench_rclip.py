"""Cold text query side by side with rclip (issue 19): rclip 3.3, mmsearch with `builtin` and mmsearch with
OpenCLIP of rclip's own architecture (ViT-B-32-256), over the same folder of real photos, in one run.

rclip runs in its own virtual environment, made by this benchmark with pip and kept in the bench cache
(``~/.cache/mmsearch-bench/rclip-venv``). rclip fetches its ONNX towers and BPE vocabulary from the Hugging
Face Hub (``yurijmikhalevich/rclip-models``) unless they already lie in its data dir (``$RCLIP_DATADIR``), so
the benchmark writes them there itself: a random-init open_clip ViT-B-32-256 exported to ONNX the way rclip's
files are (fp32, one input ``input``, one output ``output``, dynamic batch; visual = ``model.visual``,
textual = ``encode_text``) plus open_clip's own vocabulary; the same weights, saved as a state dict, are
mmsearch's ``openclip:ViT-B-32-256@CKPT``. Rankings are meaningless with random weights; the work per query
(imports, model load, tokenising, one text-tower pass, scoring) is the real one. The hub is never asked
(``HF_HUB_OFFLINE=1``); weights are cached beside the venv.

Photos: ``--photos`` JPEGs made from scikit-image's sample photos (as in bench/corpus.py), written to a temp
folder that rclip, mmsearch-builtin and mmsearch-openclip each index once (timed, for reference). Then cold
queries: a new process each time, page cache warm, bytecode compiled for both tools, one untimed warm-up
each, the tools alternating for ``--runs`` rounds (each round a different query, the same for all), top 10,
paths only. rclip is timed with ``--no-indexing`` (no folder scan, as mmsearch's query does none; by default
it first re-checks the folder for changes, shown as a second row). Beside them, the ``python -c pass`` floor
of the same run.

    python -m bench.bench_rclip [--photos 300] [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._report import record
from bench.bench_query import WORDS, mmsearch_exe, wall
from bench.corpus import CACHE

ROOT = Path(__file__).resolve().parent.parent
RCLIP_SPEC = "rclip>=3.3,<3.4"
RCLIP_VENV = CACHE / "rclip-venv"
ARCH = "ViT-B-32-256"  # rclip 3.3's model: OpenCLIP ViT-B-32-256 (datacomp_s34b_b86k)
WEIGHTS = CACHE / f"rclip-weights-{ARCH}-random-v1"
CKPT = "state_dict.pt"  # in WEIGHTS: the same random weights, for mmsearch's openclip:ARCH@CKPT


def rclip_bin(name: str) -> Path:
    return RCLIP_VENV / "bin" / name


def setup_rclip() -> str:
    """rclip 3.3 in its own venv (made once, reused); returns its version. Bytecode compiled."""
    py = rclip_bin("python")
    if not rclip_bin("rclip").exists():
        print(f"making {RCLIP_VENV} ({RCLIP_SPEC}) ...", flush=True)
        shutil.rmtree(RCLIP_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(RCLIP_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", RCLIP_SPEC], check=True)
    version = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('rclip'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not version.startswith("3.3."):
        raise SystemExit(f"{RCLIP_VENV} holds rclip {version}, not {RCLIP_SPEC}: remove it to rebuild")
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run([str(py), "-m", "compileall", "-q", site], check=True, stdout=subprocess.DEVNULL)
    return version


def rclip_layout() -> tuple[str, str, str, str]:
    """Where rclip looks for its files under its data dir, read from the installed rclip itself:
    (model subdir, visual ONNX, textual ONNX, vocabulary path)."""
    code = (
        "from rclip import model_download as m; "
        "print(m.HF_REPO_ID, m.MODEL_SUBDIR, m.VISUAL_ONNX, m.TEXTUAL_ONNX, m.TOKENIZER_VOCAB)"
    )
    out = subprocess.run([str(rclip_bin("python")), "-c", code], capture_output=True, text=True, check=True)
    _repo, subdir, visual, textual, vocab = out.stdout.split()
    if not subdir.startswith(ARCH + "-"):
        raise SystemExit(f"rclip's model is {subdir}, not {ARCH}: update ARCH in {__file__}")
    return subdir, visual, textual, vocab


def make_weights(out: str, subdir: str, visual: str, textual: str, vocab: str) -> None:
    """Random-init open_clip ARCH: rclip's ONNX towers and vocabulary, and a state dict for mmsearch.

    Runs in a child process (torch stays out of the timing process)."""
    import numpy as np
    import onnxruntime as ort
    import open_clip
    import torch

    class Tower(torch.nn.Module):  # one input, one output: what rclip feeds and reads
        def __init__(self, model: torch.nn.Module, method: str) -> None:
            super().__init__()
            self.model, self.method = model, method

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self.model, self.method)(x)

    root = Path(out)
    (root / subdir).mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    torch.save(model.state_dict(), root / CKPT)
    size = open_clip.get_model_config(ARCH)["vision_cfg"]["image_size"]
    image = torch.randn(2, 3, size, size)
    tokens = open_clip.get_tokenizer(ARCH)(["a dog on the beach", "snow"])
    for name, tower, x in (
        (visual, Tower(model.visual, "forward"), image),
        (textual, Tower(model, "encode_text"), tokens),
    ):
        tower.eval()
        path = root / subdir / name
        # with autograd on: under no_grad, eval attention takes torch's fused path, which has no ONNX export
        torch.onnx.export(
            tower, (x[:1],), str(path), input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=18, dynamo=False,
        )  # fmt: skip
        want = tower(x).detach().numpy()
        (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
        assert np.abs(got - want).max() < 1e-3, f"{name}: ONNX differs from torch"
    (root / vocab).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", root / vocab)


def setup_weights(layout: tuple[str, str, str, str]) -> Path:
    """The cached random weights (made once); returns their folder."""
    if (WEIGHTS / ".complete").exists():
        return WEIGHTS
    print(f"writing random-init {ARCH} weights to {WEIGHTS} ...", flush=True)
    part = WEIGHTS.with_name(WEIGHTS.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    code = f"from bench.bench_rclip import make_weights; make_weights(*{[str(part), *layout]!r})"
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:  # the exporter's warnings are shown only then
            raise SystemExit(f"making the weights failed:\n{out.stderr[-5000:]}")
        (part / ".complete").touch()
        shutil.rmtree(WEIGHTS, ignore_errors=True)
        part.rename(WEIGHTS)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return WEIGHTS


def make_photos(root: Path, n: int, width: int = 1600, height: int = 1200) -> None:
    """``n`` camera JPEGs from scikit-image's sample photos, each a different crop, colour and grain."""
    from bench.corpus import _camera_jpeg

    root.mkdir(parents=True)
    for i in range(n):  # one process: gentle on a shared machine, ~20 ms a picture
        _camera_jpeg((i, str(root / f"IMG_{i:05d}.jpg"), width, height))


def timed(cmd: list[str], **kw: object) -> float:
    """Wall seconds of one run of ``cmd`` (output discarded; its stderr shown if it fails)."""
    t = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {out.returncode}\n{out.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    version = setup_rclip()
    layout = rclip_layout()
    weights = setup_weights(layout)
    subdir, _visual, _textual, vocab = layout
    exe = mmsearch_exe()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mmsearch"), str(ROOT / "cli")], check=True)

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-rclip-"))
    try:
        photos = tmp / "photos"
        t = time.perf_counter()
        make_photos(photos, args.photos)
        print(f"{args.photos} photos written in {time.perf_counter() - t:.0f} s", flush=True)

        data = tmp / "rclip-data"  # rclip's DB here; its model files are links to the cached weights
        data.mkdir()
        (data / subdir).symlink_to(weights / subdir, target_is_directory=True)
        (data / vocab).parent.mkdir(parents=True, exist_ok=True)
        (data / vocab).symlink_to(weights / vocab)
        rclip_env = {**os.environ, "RCLIP_DATADIR": str(data), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
        rclip = str(rclip_bin("rclip"))
        mm_env = {**os.environ, "COLUMNS": "120"}
        builtin_idx, openclip_idx = tmp / "idx-builtin", tmp / "idx-openclip"
        openclip_model = f"openclip:{ARCH}@{weights / CKPT}"

        index_s = {  # rclip indexes a folder on its first query there
            "rclip": timed([rclip, "-f", "warm up"], cwd=photos, env=rclip_env),
            "builtin": timed([*exe, "index", str(photos), "--index", str(builtin_idx), "--model", "builtin",
                              "--no-ocr", "-q"], env=mm_env),
            "openclip": timed([*exe, "index", str(photos), "--index", str(openclip_idx), "--model", openclip_model,
                               "--no-ocr", "-q"], env=mm_env),
        }  # fmt: skip
        print("indexed in " + ", ".join(f"{k} {v:.1f} s" for k, v in index_s.items()), flush=True)

        def rclip_cmd(q: str) -> list[str]:
            return [rclip, "--no-indexing", "-f", q]

        def rclip_scan_cmd(q: str) -> list[str]:
            return [rclip, "-f", q]

        def mm_cmd(idx: Path) -> Callable[[str], list[str]]:
            return lambda q: [*exe, "query", q, "--index", str(idx), "-k", "10", "--paths-only"]

        tools = [  # (label, command for a query, cwd, env)
            (f"rclip {version} --no-indexing", rclip_cmd, photos, rclip_env),
            ("mmsearch builtin", mm_cmd(builtin_idx), None, mm_env),
            (f"mmsearch openclip:{ARCH}@CKPT", mm_cmd(openclip_idx), None, mm_env),
            (f"rclip {version} (checks folder)", rclip_scan_cmd, photos, rclip_env),
        ]
        for label, cmd, cwd, env in tools:  # warm-up (mmsearch may export ONNX towers to its cache), and a check
            out = subprocess.run(cmd("a cat on a sofa"), cwd=cwd, env=env, capture_output=True, text=True)
            hits = [line for line in out.stdout.splitlines() if line.strip()]
            if out.returncode != 0 or len(hits) != 10 or not all(str(photos) in h for h in hits):
                raise SystemExit(f"{label}: unexpected answer (rc {out.returncode}):\n{out.stdout}\n{out.stderr}")

        floor = wall([sys.executable, "-c", "pass"], 5)
        ort_floor = wall([str(rclip_bin("python")), "-c", "import numpy, onnxruntime"], 3)
        times: dict[str, list[float]] = {label: [] for label, *_ in tools}
        floors: list[float] = []
        for r in range(args.runs):  # alternating, starting with a different tool each round
            q = " ".join(WORDS[(3 * r + j) % len(WORDS)] for j in range(1 + r % 3))
            floors.append(timed([sys.executable, "-c", "pass"]))
            for k in range(len(tools)):
                label, cmd, cwd, env = tools[(r + k) % len(tools)]
                times[label].append(timed(cmd(q), cwd=cwd, env=env))
            print(f"round {r + 1}: " + ", ".join(f"{lab} {ts[-1]:.2f} s" for lab, ts in times.items()), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {label: statistics.median(ts) for label, ts in times.items()}
    floor = min(floor, statistics.median(floors))
    rc = med[tools[0][0]]
    rows = [f"{'cold text query (new process, top 10)':<44} {'median s':>9} {'min s':>7} {'index s':>8}"]
    for (label, *_), key in zip(tools, ("rclip", "builtin", "openclip", None), strict=True):
        idx = f"{index_s[key]:>8.1f}" if key else f"{'':>8}"
        rows.append(f"{label:<44} {med[label]:>9.2f} {min(times[label]):>7.2f} {idx}")
    rows.append(f"{'floor: python -c pass':<44} {floor:>9.2f}")
    rows.append(f"{'floor: import numpy, onnxruntime (rclip venv)':<44} {ort_floor:>9.2f}")
    verdict = [
        f"mmsearch {name} faster than rclip --no-indexing: {'yes' if med[label] < rc else 'NO'} "
        f"({med[label]:.2f} s vs {rc:.2f} s)"
        for name, label in (("builtin", tools[1][0]), (f"openclip:{ARCH}", tools[2][0]))
    ]
    table = "\n".join(rows)
    print("\n" + table + "\n\n" + "\n".join(verdict))
    body = (
        f"{args.photos} JPEGs (1600x1200, from scikit-image's sample photos), each tool's index made once; "
        f"{args.runs} rounds of cold text queries, tools alternating (new process, page cache warm, bytecode "
        f"compiled, one warm-up each). rclip {version} in its own venv with random-init {ARCH} ONNX towers in "
        "the layout it downloads from `yurijmikhalevich/rclip-models`; mmsearch's OpenCLIP index uses the same "
        "random weights; mmsearch indexes without OCR. Index seconds include model load.\n\n```\n"
        + table
        + "\n```\n\n"
        + "\n".join(f"- {v}" for v in verdict)
        + "\n"
    )
    record("rclip", "Cold text query beside rclip (issue 19)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
