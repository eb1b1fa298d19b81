"""Encoder ceiling vs the physical limit: matmul GFLOP/s, FLOPs per image, achieved images/s.

    python -m bench.bench_flops [--batch 32] [--batches 3] [--matmul-n 3072] [--no-record]

Peak is the best float32 ``n x n`` matmul rate torch reaches here (2 n^3 FLOPs each); a model's
FLOP-bound rate is peak / FLOPs per image (``FlopCounterMode``: a multiply-add counts 2). Achieved
rates time the encoder alone on pre-resized float tensors (median batch, after a warm-up batch) and
the real ``encode_image`` on PIL images already at the model's input size (so preprocessing shows).
OpenCLIP ViT-B-32 is random-init (speed does not depend on weights): saved to a temp checkpoint and
loaded through the ``openclip:ViT-B-32@FILE`` spec, the offline path.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench._report import record
from bench.bench_index import random_vit

# ViT-B/32 at 224 by hand (multiply-adds): patch conv, 12 x (qkv + out proj + MLP + QK^T and AV), projection.
VIT_B32_MACS = 768 * 3 * 32 * 32 * 49 + 12 * (4 * 768 * 768 * 50 + 2 * 768 * 3072 * 50 + 2 * 50 * 50 * 768) + 768 * 512


def matmul_gflops(n: int, reps: int, threads: int) -> float:
    """Best float32 ``n x n`` matmul rate over ``reps`` runs at ``threads`` threads, after one warm-up."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def count_flops(fn: Callable[[Any], Any], x: Any) -> int:
    """FLOPs of ``fn(x)``; grad on and math attention, else MultiheadAttention's fused path goes uncounted."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn(x)
    return fc.get_total_flops()


def images_per_s(runs: list[tuple[Callable[[], Any], Any, int]], batch: int, batches: int) -> list[float]:
    """``batch`` / median seconds per call, for each ``(fn, mode, threads)``; rounds interleave the runs
    so that load from other processes falls on all of them alike. One warm-up call each first."""
    import torch

    before = torch.get_num_threads()
    times: list[list[float]] = [[] for _ in runs]
    try:
        for r in range(batches + 1):
            for (fn, mode, threads), ts in zip(runs, times, strict=True):
                torch.set_num_threads(threads)
                with mode():
                    took = _timed(fn)
                if r:  # round 0 is the warm-up
                    ts.append(took)
    finally:
        torch.set_num_threads(before)
    return [batch / statistics.median(ts) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=3, help="timed batches per measurement (median)")
    ap.add_argument("--matmul-n", type=int, default=3072)
    ap.add_argument("--reps", type=int, default=5, help="timed matmuls per peak measurement (best)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    import torch

    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.base import l2_normalize
    from mmsearch.encoders.builtin import TOP_K

    threads = torch.get_num_threads()
    peak, peak1 = matmul_gflops(args.matmul_n, args.reps, threads), matmul_gflops(args.matmul_n, args.reps, 1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch, 3, 224, 224), dtype=np.float32))
    pics = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(args.batch)]

    builtin = load_encoder("builtin")

    def builtin_vectors(cnn: Any, x: Any) -> np.ndarray:  # what BuiltinEncoder._forward + image_features run
        fmap = cnn.forward_features(x)
        torch.nn.functional.adaptive_avg_pool2d(fmap, 2)
        return builtin._conse(cnn.forward_head(fmap).detach().float().numpy())

    cnn_nchw = copy.deepcopy(builtin.cnn).to(memory_format=torch.contiguous_format)  # builtin before channels_last
    # ConSE's numpy tail (top-K weighted mean of 384-d class vectors) is invisible to the counter: add it.
    builtin_flops = count_flops(lambda t: builtin_vectors(builtin.cnn, t), x[:1]) + 2 * TOP_K * builtin.dim
    with tempfile.TemporaryDirectory() as tmp:
        clip = load_encoder(random_vit(Path(tmp)))

    def clip_vectors(x: Any) -> np.ndarray:  # what OpenClipEncoder.image_features runs after preprocessing
        return l2_normalize(clip.model.encode_image(x).detach().float().numpy())

    clip_flops = count_flops(clip_vectors, x[:1])
    ng, im, plain = torch.no_grad, torch.inference_mode, contextlib.nullcontext

    def builtin_with(cnn: Any) -> Callable[[], Any]:
        """``encode_image`` with builtin's CNN swapped for ``cnn``: what a one-line change there would give."""

        def run() -> Any:
            saved, builtin._cnn = builtin.cnn, cnn
            try:
                return builtin.encode_image(pics)
            finally:
                builtin._cnn = saved

        return run

    def eff() -> np.ndarray:
        return builtin_vectors(builtin.cnn, x)

    def eff_nchw() -> np.ndarray:
        return builtin_vectors(cnn_nchw, x)

    # (name, FLOPs/image, [(path, variant, fn, mode, threads)]): first the tensor path and the API as they run today
    specs = [
        (
            "builtin (EfficientNet-Lite0 + ConSE)",
            builtin_flops,
            [
                ("tensor", "no_grad, channels_last weights (as used)", eff, ng, threads),
                ("encode_image", "as is", lambda: builtin.encode_image(pics), plain, threads),
                ("tensor", "inference_mode", eff, im, threads),
                ("tensor", "NCHW weights (before)", eff_nchw, ng, threads),
                ("tensor", "1 thread", eff, ng, 1),
                ("encode_image", "NCHW weights (before)", builtin_with(cnn_nchw), plain, threads),
                ("encode_image", "1 thread", lambda: builtin.encode_image(pics), plain, 1),
            ],
        ),
        (
            "OpenCLIP ViT-B-32 (random init)",
            clip_flops,
            [
                ("tensor", "no_grad (as used)", lambda: clip_vectors(x), ng, threads),
                ("encode_image", "as is", lambda: clip.encode_image(pics), plain, threads),
                ("tensor", "inference_mode", lambda: clip_vectors(x), im, threads),
            ],
        ),
    ]
    models = []  # (name, FLOPs/image, [(path, variant, img/s)])
    for name, flops, runs in specs:
        rates = images_per_s([r[2:] for r in runs], args.batch, args.batches)
        models.append((name, flops, [(*r[:2], rate) for r, rate in zip(runs, rates, strict=True)]))

    lines = [
        f"torch {torch.__version__}, {threads} threads, batch {args.batch}, "
        f"median of {args.batches} batches after a warm-up (interleaved).",
        f"Peak: float32 {args.matmul_n}² matmul {peak:.0f} GFLOP/s at {threads} threads ({peak1:.0f} at 1).",
        f"ViT-B-32 counted {clip_flops / 1e9:.2f} GFLOPs vs {2 * VIT_B32_MACS / 1e9:.2f} by hand "
        f"({VIT_B32_MACS / 1e9:.2f} GMACs, timm's published 4.4 GMACs).",
        "",
        "| model | GFLOPs/image | FLOP-bound img/s | tensor img/s | API img/s | tensor/limit | API/limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, flops, rates in models:
        limit = peak / (flops / 1e9)
        tensor, api_rate = rates[0][2], rates[1][2]
        lines.append(
            f"| {name} | {flops / 1e9:.3f} | {limit:.0f} | {tensor:.1f} | {api_rate:.1f} "
            f"| {tensor / limit:.0%} | {api_rate / limit:.0%} |"
        )
    lines += ["", "| model | path | variant | img/s | vs as used |", "|---|---|---|---:|---:|"]
    for name, _, rates in models:
        base = {path: r for path, _, r in rates[1::-1]}
        lines += [f"| {name.split(' (')[0]} | {p} | {v} | {r:.1f} | {r / base[p]:.2f}x |" for p, v, r in rates]
    lb, lc = (m[2][0][2] / (peak / (m[1] / 1e9)) for m in models)
    lines += [
        "",
        f"ViT-B-32 reaches {lc:.0%} of the matmul limit because nearly all its FLOPs are large GEMMs "
        f"(50 tokens x 768-3072 wide) that run in the same BLAS kernels as the peak test. EfficientNet-Lite0 "
        f"reaches {lb:.0%}: most of its layers are depthwise 3x3/5x5 convolutions and 1x1 convolutions over "
        "large, thin activation maps, which do a few FLOPs per byte moved, so they are bound by memory "
        "bandwidth and per-layer overhead, not by the FMA units. The API column adds the per-image PIL "
        "resize/crop and float conversion, which ViT-B-32's ten-times-larger compute hides. Not visible here "
        "because it applies to every row: `load_encoder` stops glibc from returning large freed blocks to the "
        "kernel (`keep_freed_memory`); before that, builtin spent half its CPU time in page faults and ran "
        "~85 img/s on tensors instead of ~240 (same machine, batch 32).",
    ]
    body = "\n".join(lines)
    print(body)
    record("flops", "Encoder ceiling vs the matmul limit", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
