"""Training throughput of `mmsearch train` on synthetic scenes (tests/synthetic.py), 2-core CPU.

    python bench/bench_train.py [--per-combo 5] [--epochs 15] [--unfreeze-image 1]

Prints the one-off feature pass (images/s through the frozen towers) and the head training rate
(pairs/s), plus validation and unseen-combination R@1 before and after training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic import write_split  # noqa: E402

from mmsearch.encoders import load_encoder  # noqa: E402
from mmsearch.evaluation import evaluate, load_pairs  # noqa: E402
from mmsearch.training.train import TrainConfig, TrainHooks, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-combo", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--unfreeze-image", type=int, default=0, help="also train the last N CNN stages")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train_csv, test_csv = write_split(Path(tmp), per_combo=args.per_combo)
        pairs = load_pairs(train_csv)
        load_encoder("builtin")
        marks: dict[str, float] = {}
        hooks = TrainHooks(
            extract_start=lambda total: marks.setdefault("extract", time.perf_counter()),
            epoch_start=lambda epoch, steps: marks.setdefault("train", time.perf_counter()),
        )
        report = train(
            pairs, Path(tmp) / "model", TrainConfig(epochs=args.epochs, unfreeze_image=args.unfreeze_image), hooks=hooks
        )
        extract_s = marks["train"] - marks["extract"]
        images = len(pairs.items)
        test = load_pairs(test_csv)
        zero = evaluate(load_encoder("builtin"), test)["text_to_item"]["R@1"]
        trained = evaluate(load_encoder(str(Path(tmp) / "model")), test)["text_to_item"]["R@1"]
    print(
        f"pairs {report.train_pairs} train / {report.val_pairs} val, {args.epochs} epochs, "
        f"unfreeze-image {args.unfreeze_image}"
    )
    print(f"feature pass: {images / extract_s:.1f} images/s (frozen towers, once per run)")
    print(f"head training: {report.pairs_per_second:.0f} pairs/s")
    print(f"validation R@1: zero-shot {report.zero_shot_val['R@1']:.3f} -> {report.best_val['R@1']:.3f}")
    print(f"unseen combinations R@1: zero-shot {zero:.3f} -> trained {trained:.3f} (+{trained - zero:.3f})")


if __name__ == "__main__":
    main()
