"""The towers of `auto` and `builtin`, measured here: image towers' compute and speed, CLAP's and the sound
towers' time per window.

    python -m bench.bench_towers [--batch 8] [--rounds 3] [--no-record]

Every model is random-init (speed does not depend on weights; this machine cannot download). Image
towers: multiply-adds per image (``FlopCounterMode``, halved) and images/s through ``encode_image`` on
input-size tensors, 1 thread and all threads, rounds interleaved, median. Sounds: seconds per 10 s window
for CLAP (transformers' ``ClapConfig()``: the HTSAT + RoBERTa layout of ``laion/clap-htsat-unfused``),
builtin's SoundNet ConSE vector and ``soundsim``; CLAP's text tower per query. The ratios compare towers
measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._report import record
from bench.bench_flops import count_flops


def _median_s(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    import logging

    import open_clip
    import torch

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warning
    threads = torch.get_num_threads()
    lines = [
        f"{'image tower':22} {'input':>5} {'GMACs':>6} {'img/s 1 thr':>11} {f'img/s {threads} thr':>11}  vs ViT-B-32"
    ]
    base: float | None = None
    for arch in ("ViT-B-32", "MobileCLIP2-S0", "MobileCLIP2-S2"):
        model = open_clip.create_model(arch, pretrained=None).eval()
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else int(size)
        x = torch.randn(args.batch, 3, size, size)
        macs = count_flops(model.encode_image, x[:1]) / 2e9
        rates = []
        for n in (1, threads):
            torch.set_num_threads(n)
            with torch.no_grad():
                rates.append(args.batch / _median_s(lambda m=model, x=x: m.encode_image(x), args.rounds))
        torch.set_num_threads(threads)
        base = base or rates[0]
        lines.append(f"{arch:22} {size:>5} {macs:6.2f} {rates[0]:11.1f} {rates[1]:11.1f}  {rates[0] / base:.2f}x")
        print(lines[-1], flush=True)

    from transformers import ClapConfig, ClapModel

    from mmsearch.encoders import load_encoder

    clap = ClapModel(ClapConfig()).eval()
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")
    rng = np.random.default_rng(0)
    window48 = (0.1 * rng.standard_normal(10 * 48000)).astype(np.float32)
    window22 = (0.1 * rng.standard_normal(10 * 22050)).astype(np.float32)
    tokens = {"input_ids": torch.randint(5, 1000, (1, 12)), "attention_mask": torch.ones(1, 12, dtype=torch.long)}

    def clap_audio() -> None:
        with torch.no_grad():
            clap.get_audio_features(**extractor([window48], sampling_rate=48000, return_tensors="pt"))

    def clap_text() -> None:
        with torch.no_grad():
            clap.get_text_features(**tokens)

    builtin, soundsim = load_encoder("builtin"), load_encoder("soundsim")
    timings = {
        "CLAP (HTSAT) sound, 10 s window": _median_s(clap_audio, args.rounds),
        "builtin SoundNet ConSE, 10 s window": _median_s(lambda: builtin.encode_audio([window22]), args.rounds),
        "soundsim, 10 s window": _median_s(lambda: soundsim.encode_audio([window22]), args.rounds),
        "CLAP (RoBERTa) text, one query": _median_s(clap_text, args.rounds),
    }
    sound = [f"{name:38} {s * 1000:8.1f} ms   {10 / s:6.1f}x real time" if "window" in name else
             f"{name:38} {s * 1000:8.1f} ms" for name, s in timings.items()]  # fmt: skip
    print("\n".join(sound))
    body = (
        f"Random-init models, {threads} threads unless said, batch {args.batch}, median of {args.rounds} rounds.\n\n"
        "```\n" + "\n".join(lines) + "\n\n" + "\n".join(sound) + "\n```\n"
    )
    record("towers", "Towers (issue 17)", body, enabled=not args.no_record)


if __name__ == "__main__":
    main()
