"""Pixel and identity losses of the generator, including MEER's id-preserving loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_loss(restored: torch.Tensor, clean: torch.Tensor, occlusion: torch.Tensor, inside: float) -> torch.Tensor:
    """L1 to the clean face, weighted ``1 + inside`` on occluded pixels ``[B, 1, S, S]``."""
    weight = 1.0 + inside * occlusion
    return (weight * (restored.float() - clean.float()).abs()).sum() / (weight.sum() * restored.shape[1])


def id_preserving_loss(restored_embedding: torch.Tensor, clean_embedding: torch.Tensor) -> torch.Tensor:
    """Cosine distance of the restored face's embedding to the clean face's (target detached).

    The gradient reaches the generator (and, in joint training, the recogniser on the
    restored side) but never moves the clean target.
    """
    return (1 - F.cosine_similarity(restored_embedding.float(), clean_embedding.detach().float())).mean()
