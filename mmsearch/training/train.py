"""`mmsearch train`: LiT-style contrastive training of heads on frozen towers.

The base towers are frozen, so their outputs are computed once per run (one pass over the
images and captions); the epochs then train only the heads, which is fast on a CPU. The best
checkpoint by validation text->item R@1 is kept, starting from the untrained (zero-shot) heads,
so the saved model is never worse on validation than the base it started from.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders import AUDIO, IMAGE, canonical_name, load_encoder
from mmsearch.encoders.base import TrainableEncoder, trainable
from mmsearch.encoders.trained import CONFIG, FORMAT, WEIGHTS
from mmsearch.errors import MediaError, MmsearchError
from mmsearch.evaluation import Pairs, load_item_images, pairs_modality, recall_at_k

# Sound pairs: a head is trained on the first TRAIN_AUDIO_SECONDS of each clip.
TRAIN_AUDIO_SECONDS = 30.0

LAST = "last.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters; all of them are written into the model's config.json."""

    base: str = "builtin"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.2
    train_text: bool = False
    unfreeze_image: int = 0  # trailing CNN stages trained too (builtin only); 0 = towers fully frozen


@dataclass
class EpochStats:
    epoch: int
    loss: float
    val_r1: float
    best: bool


@dataclass
class TrainReport:
    out_dir: str
    train_pairs: int
    val_pairs: int
    zero_shot_val: dict[str, float]
    best_val: dict[str, float]
    best_epoch: int
    seconds: float
    pairs_per_second: float
    history: list[EpochStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainHooks:
    """Progress callbacks; library code never prints."""

    extract_start: Callable[[int], None] = lambda total: None
    extract_advance: Callable[[int], None] = lambda n: None
    epoch_start: Callable[[int, int], None] = lambda epoch, steps: None
    step: Callable[[float], None] = lambda loss: None
    epoch_end: Callable[[EpochStats], None] = lambda stats: None


def split_by_item(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """Hold out a fraction of the *items* (with all their captions) for validation."""
    order = list(range(len(pairs.items)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(order) * fraction))
    held = set(order[:n_val])
    train, val = Pairs(), Pairs()
    for part, keep in ((train, lambda i: i not in held), (val, lambda i: i in held)):
        remap: dict[int, int] = {}
        for caption, item in zip(pairs.captions, pairs.caption_item, strict=True):
            if not keep(item):
                continue
            if item not in remap:
                remap[item] = len(part.items)
                part.items.append(pairs.items[item])
            part.captions.append(caption)
            part.caption_item.append(remap[item])
    return train, val


@dataclass
class _Features:
    base: Any  # [items, dim] torch
    feats: Any  # [items, feature_dim] torch
    text: Any  # [captions, dim] torch
    caption_item: Any  # [captions] torch long
    caption_id: Any  # [captions] torch long: equal captions share an id


def _load_clips(encoder: TrainableEncoder, items: list[str]) -> list[np.ndarray]:
    from mmsearch.modalities.audio_io import load_audio

    clips = []
    for item in items:
        try:
            clips.append(load_audio(item, int(encoder.audio_sample_rate or 0), max_seconds=TRAIN_AUDIO_SECONDS))
        except MediaError as e:
            raise MmsearchError(f"cannot train on {item}: {e}") from e
    return clips


def _extract(
    encoder: TrainableEncoder,
    pairs: Pairs,
    batch_size: int,
    hooks: TrainHooks,
    unfreeze: int = 0,
    modality: str = IMAGE,
) -> _Features:
    import torch

    bases, feats = [], []
    for start in range(0, len(pairs.items), batch_size):
        chunk = pairs.items[start : start + batch_size]
        if modality == AUDIO:
            b, f = encoder.audio_features(_load_clips(encoder, chunk))
        elif unfreeze:
            b, f = encoder.image_activations(load_item_images(chunk, purpose="train on"), unfreeze)
        else:
            b, f = encoder.image_features(load_item_images(chunk, purpose="train on"))
        bases.append(b)
        feats.append(f)
        hooks.extract_advance(len(chunk))
    text = [encoder.encode_text(pairs.captions[s : s + 256]) for s in range(0, len(pairs.captions), 256)]
    hooks.extract_advance(len(pairs.captions))
    ids: dict[str, int] = {}
    caption_id = [ids.setdefault(c, len(ids)) for c in pairs.captions]
    return _Features(
        torch.from_numpy(np.concatenate(bases)),
        torch.from_numpy(np.concatenate(feats)),
        torch.from_numpy(np.concatenate(text)),
        torch.tensor(pairs.caption_item, dtype=torch.long),
        torch.tensor(caption_id, dtype=torch.long),
    )


def _validate(heads: Any, val: _Features) -> dict[str, float]:
    import torch

    with torch.no_grad():
        items = torch.cat(
            [heads.image_out(b, f) for b, f in zip(val.base.split(256), val.feats.split(256), strict=True)]
        ).numpy()
        texts = heads.text_out(val.text).numpy()
    return recall_at_k(texts, items, val.caption_item.tolist())["text_to_item"]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_model(out: Path, heads: Any, config: TrainConfig, summary: dict[str, Any]) -> None:
    _atomic_torch_save(heads.state_dict(), out / WEIGHTS)
    meta = {"format": FORMAT, "base": config.base, "heads": heads.config(), "training": asdict(config), **summary}
    tmp = out / (CONFIG + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / CONFIG)


def train(
    pairs: Pairs,
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    val: Pairs | None = None,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainReport:
    """Train heads for ``config.base`` on ``pairs``; write the model directory ``out_dir``.

    Args:
        pairs: Training pairs (see :func:`mmsearch.evaluation.load_pairs`).
        out_dir: Model directory to write (``config.json``, ``heads.pt``, ``last.pt``).
        config: Hyper-parameters.
        val: Validation pairs; default: ``config.val_fraction`` of the items held out.
        resume: Continue from ``out_dir/last.pt``.
        hooks: Progress callbacks.
    """
    import torch

    from mmsearch.encoders.heads import Heads
    from mmsearch.training.loss import clip_loss

    # a model directory as base is recorded by its absolute path
    config = config or TrainConfig()
    config = replace(config, base=canonical_name(config.base))
    hooks = hooks or TrainHooks()
    out = Path(out_dir).expanduser().resolve()
    t0 = time.perf_counter()
    if val is None:
        pairs, val = split_by_item(pairs, config.val_fraction, config.seed)
    if not val.items or not pairs.items:
        raise MmsearchError("need at least one training and one validation item: add pairs or pass --val")
    modality = pairs_modality(pairs)
    if pairs_modality(val) != modality:
        raise MmsearchError("training and validation pairs hold different kinds of items")
    if modality == AUDIO and config.unfreeze_image:
        raise MmsearchError("--unfreeze-image applies to image pairs, not to sounds")
    encoder = trainable(load_encoder(config.base), modality, config.unfreeze_image)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    hooks.extract_start(len(pairs.items) + len(val.items) + len(pairs.captions) + len(val.captions))
    trunk = encoder.trainable_tail(config.unfreeze_image) if config.unfreeze_image else None
    train_f = _extract(encoder, pairs, config.batch_size, hooks, config.unfreeze_image, modality)
    val_f = _extract(encoder, val, config.batch_size, hooks, config.unfreeze_image, modality)

    feature_dim = int(encoder.feature_dims[modality])
    heads = Heads(feature_dim, int(encoder.dim), config.train_text, trunk, config.unfreeze_image, modality)
    with torch.no_grad():
        heads.eval()
        heads.set_feature_stats(torch.cat([heads.features(c) for c in train_f.feats.split(256)]))
    opt = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    zero_shot = _validate(heads, val_f)
    best, best_epoch, start_epoch = zero_shot, 0, 1
    history: list[EpochStats] = []
    if resume:
        try:
            state = torch.load(out / LAST, map_location="cpu", weights_only=False)
        except OSError as e:
            raise MmsearchError(f"nothing to resume in {out}: {e}") from e
        try:
            heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise MmsearchError(f"cannot resume from {out / LAST}: it was written with other settings ({e})") from e
        best, best_epoch, start_epoch = state["best"], state["best_epoch"], state["epoch"] + 1
        zero_shot = state["zero_shot"]
        history = [EpochStats(**h) for h in state["history"]]
    else:
        _write_model(out, heads, config, {"best_epoch": 0, "val": zero_shot, "zero_shot_val": zero_shot})

    rows = len(train_f.caption_item)
    steps = (rows + config.batch_size - 1) // config.batch_size
    trained_pairs = 0
    t_train = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        hooks.epoch_start(epoch, steps)
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # resume-stable order
        perm = torch.randperm(rows, generator=gen)
        heads.train()
        total = 0.0
        for s in range(0, rows, config.batch_size):
            idx = perm[s : s + config.batch_size]
            item = train_f.caption_item[idx]
            image = heads.image_out(train_f.base[item], train_f.feats[item])
            text = heads.text_out(train_f.text[idx])
            loss = clip_loss(image, text, heads.logit_scale, train_f.caption_id[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = float(loss.detach())
            total += value * len(idx)
            trained_pairs += len(idx)
            hooks.step(value)
        heads.eval()
        scores = _validate(heads, val_f)
        improved = scores["R@1"] > best["R@1"]
        if improved:
            best, best_epoch = scores, epoch
            _write_model(out, heads, config, {"best_epoch": epoch, "val": scores, "zero_shot_val": zero_shot})
        stats = EpochStats(epoch, total / rows, scores["R@1"], improved)
        history.append(stats)
        _atomic_torch_save(
            {
                "heads": heads.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "zero_shot": zero_shot,
                "history": [asdict(h) for h in history],
            },
            out / LAST,
        )
        hooks.epoch_end(stats)
    train_s = time.perf_counter() - t_train
    return TrainReport(
        out_dir=str(out),
        train_pairs=len(pairs.captions),
        val_pairs=len(val.captions),
        zero_shot_val=zero_shot,
        best_val=best,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - t0,
        pairs_per_second=trained_pairs / train_s if train_s > 0 else 0.0,
        history=history,
    )
