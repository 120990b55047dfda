"""Adversarial loss with its label convention inside (after CycleGAN's ``GANLoss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GANLoss(nn.Module):
    """``lsgan``: least squares to 1 (real) / 0 (fake). ``hinge``: the SNGAN hinge loss.

    Call ``loss(scores, real=True)`` for the generator's objective (fakes should look real),
    ``loss(scores, real=..., discriminator=True)`` for the discriminator's.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in ("lsgan", "hinge"):
            raise ValueError(f"gan mode must be lsgan or hinge, got {mode!r}")
        self.mode = mode

    def forward(self, scores: torch.Tensor, real: bool, discriminator: bool = False) -> torch.Tensor:
        scores = scores.float()
        if self.mode == "lsgan":
            return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))
        if discriminator:
            return F.relu(1 - scores).mean() if real else F.relu(1 + scores).mean()
        return -scores.mean()


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """L1 between discriminator activations of restored and clean faces (real side detached)."""
    return sum(F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake, real)) / len(fake)
