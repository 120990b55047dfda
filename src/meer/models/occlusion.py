"""Pixel-level occlusion: sharpens the decoupling module's coarse mask map (issue 15, item 2).

The decoupling module predicts the occlusion at stride 8 (14 x 14 for a 112 px face), so its
upsampled edge wanders by a few pixels: a mask rim or an ear loop it misses stays in the
restored face, and skin it takes for mask is repainted. :class:`OcclusionRefiner` is a small
U-Net over the image and the upsampled coarse logits that adds a correction to those logits at
full resolution: the coarse map says roughly where the mask is, the pixels say where its edge
runs. It starts at zero (the coarse map as it was) and trains on rendered masks with the rest
of the model frozen (``bench/train_occlusion.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from meer.models.layers import upsample


def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))


class OcclusionRefiner(nn.Module):
    """``(images [B, 3, S, S] in [-1, 1], coarse logits [B, 1, S, S]) -> logits [B, 1, S, S]``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, width * 3 // 2, width * 2
        self.stem = conv(4, w1)
        self.down1 = conv(w1, w2, stride=2)
        self.mid1 = conv(w2, w2)
        self.down2 = conv(w2, w3, stride=2)
        self.mid2 = conv(w3, w3, dilation=2)
        self.up2 = conv(w3 + w2, w2)
        self.up1 = conv(w2 + w1, w1)
        self.out = nn.Conv2d(w1, 1, 1)
        nn.init.zeros_(self.out.weight)  # the coarse map, unchanged, until it learns
        nn.init.zeros_(self.out.bias)

    def forward(self, images: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        # the logits clipped: a confident coarse cell must not swamp the image's own edges
        f1 = self.stem(torch.cat([images, coarse.clamp(-8, 8) / 4], 1))
        f2 = self.mid1(self.down1(f1))
        f3 = self.mid2(self.down2(f2))
        g2 = self.up2(torch.cat([resize(f3, f2), f2], 1))
        g1 = self.up1(torch.cat([resize(g2, f1), f1], 1))
        return coarse + self.out(g1)


def resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized bilinearly to the height and width of ``like`` (as it is when they match)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return upsample(x, like.shape[-2:])
