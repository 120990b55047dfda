"""Pixel and identity losses of the generator, including MEER's id-preserving loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meer.losses import weighted_mean


def pixel_loss(restored: torch.Tensor, clean: torch.Tensor, occlusion: torch.Tensor, inside: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 to the clean face, weighted ``1 + inside`` on occluded pixels ``[B, 1, S, S]``, and by
    ``weight`` [B] per sample (0 for a face with no clean twin)."""
    pixels = 1.0 + inside * occlusion
    if weight is not None:
        pixels = pixels * weight.to(pixels.dtype)[:, None, None, None]
    total = (pixels.sum() * restored.shape[1]).clamp_min(torch.finfo(torch.float32).eps)
    return (pixels * (restored.float() - clean.float()).abs()).sum() / total


def id_preserving_loss(restored_embedding: torch.Tensor, clean_embedding: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine distance of the restored face's embedding to the clean face's (target detached).

    The gradient reaches the generator (and, in joint training, the recogniser on the
    restored side) but never moves the clean target.
    """
    distance = 1 - F.cosine_similarity(restored_embedding.float(), clean_embedding.detach().float())
    return weighted_mean(distance, weight)
