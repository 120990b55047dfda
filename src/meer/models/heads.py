"""Margin softmax for recognition: margins as pure ``(cosine, labels) -> logits`` transforms.

The class-centre matrix lives in the loss module apart from the margin, so the centres can be
sharded across ranks (``meer.models.partial_fc``) without touching the margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CombinedMargin(nn.Module):
    """``s * (cos(m1 * theta + m2) - m3)`` for the target class, ``s * cos(theta)`` elsewhere.

    ArcFace is ``(1, m, 0)``, CosFace ``(1, 0, m)``, SphereFace-like ``(m, 0, 0)``. Labels of -1
    (a sample whose class lives on another rank) get no margin.
    """

    def __init__(self, scale: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> None:
        super().__init__()
        self.scale, self.m1, self.m2, self.m3 = scale, m1, m2, m3

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``cosine`` [B, C] in [-1, 1], ``labels`` [B] -> logits [B, C]."""
        has_target = labels >= 0
        rows = torch.nonzero(has_target).squeeze(1)
        cols = labels[rows]
        target = cosine[rows, cols].float()
        if self.m1 != 1.0 or self.m2 != 0.0:
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            margin_theta = self.m1 * theta + self.m2
            # Past pi, cos(theta + m) would grow again; fall back to a linear penalty there
            # (the "easy margin" fix of the insightface reference).
            shifted = torch.where(
                margin_theta <= math.pi,
                torch.cos(margin_theta),
                target - self.m2 * math.sin(self.m2) - (self.m1 - 1.0),
            )
        else:
            shifted = target
        shifted = shifted - self.m3
        logits = cosine.float().clone()
        logits[rows, cols] = shifted
        return logits * self.scale


def make_margin(kind: str, scale: float, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> CombinedMargin:
    """``arcface`` uses m2, ``cosface`` uses m3, ``combined`` all three."""
    if kind == "arcface":
        return CombinedMargin(scale, 1.0, m2, 0.0)
    if kind == "cosface":
        return CombinedMargin(scale, 1.0, 0.0, m3)
    if kind == "combined":
        return CombinedMargin(scale, m1, m2, m3)
    raise ValueError(f"unknown margin {kind!r}: choose arcface, cosface or combined")


def init_centres(start: int, end: int, embedding_dim: int, seed: int, chunk: int = 4096) -> torch.Tensor:
    """Rows ``[start, end)`` of a N(0, 0.01) centre matrix that depends only on ``seed``.

    Drawn in fixed chunks of rows, each from its own generator, so a rank holding a shard
    gets exactly the rows an unsharded head would have, without building the whole matrix.
    """
    rows = []
    for first in range(start // chunk * chunk, end, chunk):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + first // chunk)
        block = torch.randn(chunk, embedding_dim, generator=generator) * 0.01
        rows.append(block[max(start - first, 0) : min(end - first, chunk)])
    return torch.cat(rows) if rows else torch.empty(0, embedding_dim)


class MarginSoftmaxLoss(nn.Module):
    """Class centres + a margin + cross-entropy: the recognition loss ``L_rec``.

    One learnable unit-norm centre per identity (``weight`` [num_classes, D]); see
    :class:`meer.models.partial_fc.ShardedMarginSoftmaxLoss` for the sharded equivalent.
    """

    def __init__(self, num_classes: int, embedding_dim: int, margin: CombinedMargin, seed: int = 0) -> None:
        super().__init__()
        self.margin = margin
        self.weight = nn.Parameter(init_centres(0, num_classes, embedding_dim, seed))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> cosine to every centre ``[B, num_classes]``."""
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.margin(self.cosine(embeddings), labels), labels)

    def full_weight(self) -> torch.Tensor:
        return self.weight.detach()

    def load_full_weight(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(weight)
