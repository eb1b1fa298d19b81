"""The CLIP loss: symmetric InfoNCE with a learnable temperature."""

from __future__ import annotations

from typing import Any

MAX_LOGIT_SCALE = 100.0


def clip_loss(image: Any, text: Any, logit_scale: Any, caption_ids: Any = None) -> Any:
    """Symmetric InfoNCE over a batch of matching (image, text) rows.

    Args:
        image: ``[n, d]`` L2-normalised image embeddings.
        text: ``[n, d]`` L2-normalised text embeddings; row i describes image i.
        logit_scale: ``log(1/temperature)`` (a tensor; exponentiated and clamped at 100).
        caption_ids: optional ``[n]`` ids; rows with the same caption count as positives of each other
            (targets spread evenly over them) instead of as false negatives.

    Returns:
        ``(CE(image->text) + CE(text->image)) / 2``, a scalar tensor.
    """
    import torch
    import torch.nn.functional as F

    logits = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * image @ text.T
    n = logits.shape[0]
    if caption_ids is None:
        target = torch.arange(n, device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    soft = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft)) / 2
