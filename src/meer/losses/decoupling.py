"""Losses of the mask decoupling module: occlusion map, mask type, decoupling, orthogonality."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meer.losses import weighted_mean


def resize_occlusion(occlusion: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average a 0/1 map ``[B, 1, S, S]`` to ``size``: the covered share of each cell."""
    return F.adaptive_avg_pool2d(occlusion, size) if occlusion.shape[-2:] != size else occlusion


def occlusion_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice between predicted logits ``[B, 1, h, w]`` and a 0/1 map at any resolution.

    Dice keeps the loss informative when the mask is a small part of the image; the ``eps``
    smoothing makes an empty prediction for an unmasked face cost nothing. ``weight`` [B]: see
    :mod:`meer.losses` (a real mask's occlusion is unknown: weight 0).
    """
    target = resize_occlusion(target.float(), logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean((1, 2, 3))
    prob = torch.sigmoid(logits.float())
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + eps) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)
    return weighted_mean(bce + dice, weight)


def orthogonality_loss(identity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between the pooled identity and mask parts ``[B, C, h, w]``."""
    a = F.normalize(identity.mean((2, 3)).float(), dim=1)
    b = F.normalize(mask.mean((2, 3)).float(), dim=1)
    return ((a * b).sum(1) ** 2).mean()
