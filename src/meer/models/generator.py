"""The unmasking generator: restores the hidden lower face from the identity features.

MEER's second idea. A decoder starts from the identity part ``x_id`` and climbs back to full
resolution, taking skip features from the backbone at each scale. Skips are multiplied by
``1 - predicted occlusion`` so the mask's own pixels cannot leak through them; the generator
must paint the lower face from identity and visible context. The output is composited:
generated pixels where the occlusion was predicted, input pixels everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UpBlock(nn.Module):
    """Bilinear up to the skip's size (x2 for IResNet; no checkerboard), concatenate the gated
    skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([x, skip], 1))


class UnmaskGenerator(nn.Module):
    def __init__(self, identity_channels: int, skip_channels: tuple[int, int, int], width: int = 32) -> None:
        """``skip_channels``: channels of the backbone maps at strides 2, 4 and 8."""
        super().__init__()
        c1, c2, c3 = skip_channels
        self.bottleneck = nn.Sequential(
            nn.Conv2d(identity_channels, width * 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(width * 8),
            nn.ReLU(inplace=True),
        )
        self.up8 = UpBlock(width * 8, c3, width * 4)
        self.up4 = UpBlock(width * 4, c2, width * 2)
        self.up2 = UpBlock(width * 2, c1, width)
        self.up1 = UpBlock(width, 3, width)  # full resolution: the visible input pixels
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)

    def forward(
        self, identity: torch.Tensor, skips: list[torch.Tensor], image: torch.Tensor, occlusion: torch.Tensor
    ) -> torch.Tensor:
        """Raw restoration ``[B, 3, S, S]`` in [-1, 1].

        identity: x_id [B, C, S/16, S/16]; skips: backbone maps at strides 2, 4, 8;
        image: the masked input [B, 3, S, S]; occlusion: predicted probability [B, 1, S, S].
        """
        visible = 1.0 - occlusion
        x = self.bottleneck(identity)
        x = self.up8(x, skips[2] * F.adaptive_avg_pool2d(visible, skips[2].shape[-2:]))
        x = self.up4(x, skips[1] * F.adaptive_avg_pool2d(visible, skips[1].shape[-2:]))
        x = self.up2(x, skips[0] * F.adaptive_avg_pool2d(visible, skips[0].shape[-2:]))
        x = self.up1(x, image * visible)
        return torch.tanh(self.to_rgb(x))


def composite(restored: torch.Tensor, image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Generated pixels inside ``region`` (0/1, [B, 1, S, S]), the input's own pixels elsewhere.

    Where ``region`` is 0 the result is the input bit for bit.
    """
    return torch.where(region.bool(), restored, image)
