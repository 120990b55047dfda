"""MEER's loss functions. Each reduces over the batch; ``weight`` (float [B], optional) weighs
the samples, so that samples a term does not apply to (weight 0) drop out of it."""

from __future__ import annotations

import torch


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-sample ``values [B]`` weighted by ``weight [B]``; 0 when every weight is 0
    (the graph stays connected, so distributed training sees every parameter used)."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(torch.finfo(values.dtype).eps)
