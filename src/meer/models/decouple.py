"""The mask decoupling module (MDM): splits backbone features into a mask part and an identity part.

MEER's first idea: the identity embedding is built from what the mask leaves visible and
carries no trace of the mask itself. On the last feature map ``x``:

* an occlusion head predicts where the mask is (supervised by the rendered map);
* channel and spatial attention ``A(x)`` (the spatial branch reads the predicted occlusion)
  forms the mask part ``x_mask = A(x) * x``; the identity part is the rest, ``x_id = x - x_mask``;
* a mask head classifies mask presence / type from the mask part;
* a classifier behind a gradient-reversal layer tries to find the mask type in ``x_id``;
  the reversed gradient teaches the backbone to leave no mask information there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from meer.models.layers import conv_bn_act, grad_reverse, upsample


@dataclass
class DecoupleOutput:
    identity: torch.Tensor  # x_id [B, C, h, w]
    mask: torch.Tensor  # x_mask [B, C, h, w]
    attention: torch.Tensor  # A(x) [B, C, h, w], in [0, 1]
    occlusion_logits: torch.Tensor  # [B, 1, h', w'] (h' = resolution of the occlusion head)
    mask_logits: torch.Tensor  # [B, num_mask_types] from x_mask
    adversary_logits: torch.Tensor  # [B, num_mask_types] from x_id behind gradient reversal


class MaskDecoupling(nn.Module):
    def __init__(
        self,
        channels: int,
        prev_channels: int | None = None,
        num_mask_types: int = 4,
        reduction: int = 8,
        grl_strength: float = 1.0,
    ) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        occ_in = channels + (prev_channels or 0)
        self.use_prev = prev_channels is not None
        self.occlusion_head = nn.Sequential(
            conv_bn_act(occ_in, hidden), nn.Conv2d(hidden, 1, 1)
        )
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        # Spatial attention from [mean over channels, max over channels, predicted occlusion].
        self.spatial_attention = nn.Conv2d(3, 1, 7, padding=3)
        self.mask_head = nn.Linear(channels, num_mask_types)
        self.adversary = nn.Sequential(
            nn.Linear(channels, hidden), nn.PReLU(hidden), nn.Linear(hidden, num_mask_types)
        )
        self.grl_strength = grl_strength

    def start_closed(self, bias: float = -4.0) -> None:
        """Spatial attention starts near 0 (sigmoid(-4) = 0.018), so ``x_id`` starts near ``x``."""
        nn.init.zeros_(self.spatial_attention.weight)
        nn.init.constant_(self.spatial_attention.bias, bias)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> DecoupleOutput:
        """``x`` [B, C, h, w] (last map), ``prev`` [B, C', 2h, 2w] (the map before it)."""
        if self.use_prev:
            if prev is None:
                raise ValueError("this MaskDecoupling was built to read the previous feature map")
            up = upsample(x, prev.shape[-2:])
            occlusion_logits = self.occlusion_head(torch.cat([prev, up], 1))
        else:
            occlusion_logits = self.occlusion_head(x)
        occlusion = torch.sigmoid(occlusion_logits)
        if self.use_prev:  # the previous map has (about) twice the resolution of x
            occlusion = F.adaptive_avg_pool2d(occlusion, x.shape[-2:])
        spatial_in = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True), occlusion], 1)
        attention = torch.sigmoid(self.channel_attention(x)) * torch.sigmoid(self.spatial_attention(spatial_in))
        x_mask = attention * x
        x_id = x - x_mask
        mask_logits = self.mask_head(x_mask.mean((2, 3)))
        adversary_logits = self.adversary(grad_reverse(x_id, self.grl_strength).mean((2, 3)))
        return DecoupleOutput(x_id, x_mask, attention, occlusion_logits, mask_logits, adversary_logits)
