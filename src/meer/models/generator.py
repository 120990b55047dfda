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

from meer.models.layers import upsample


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
        x = upsample(x, skip.shape[-2:])
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


class GatedConv(nn.Module):
    """Gated convolution (Yu et al., *Free-form image inpainting with gated convolution*, 2019):
    ``act(BN(features)) * sigmoid(gate)``, a soft mask learned per channel and pixel, so a layer
    can tell the pixels it must invent from the ones it can read."""

    def __init__(self, cin: int, cout: int, dilation: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, 3, stride=stride, padding=dilation, dilation=dilation)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.conv(x).chunk(2, dim=1)
        return F.elu(self.norm(features)) * torch.sigmoid(gate)


class GatedUpBlock(nn.Module):
    """Bilinear up to the skip's size, the gated skip projected to ``cout`` channels (1x1), the
    occlusion map as one more channel, then two gated convolutions (the second dilated, for a
    wider view of the face around the hole)."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(cskip, cout, 1)
        self.body = nn.Sequential(GatedConv(cin + cout + 1, cout), GatedConv(cout, cout, dilation=2))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, occlusion: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """``extra``: features ``[B, cout, h, w]`` added to the skip's projection (resized to it)."""
        size = skip.shape[-2:]
        x = upsample(x, size)
        hole = F.adaptive_avg_pool2d(occlusion, size)
        projected = self.project(skip * (1.0 - hole))
        if extra is not None:
            projected = projected + upsample(extra, size)
        return self.body(torch.cat([x, projected, hole], 1))


class GatedGenerator(nn.Module):
    """The restoration generator of issue 15: same inputs and gating of the skips as
    :class:`UnmaskGenerator`, but gated convolutions at every scale, the occlusion map fed to each
    of them (the network knows where to paint), skips projected by 1x1 convolutions (fewer
    weights, so a wider decoder fits the release's size) and a residual refinement at full
    resolution."""

    def __init__(self, identity_channels: int, skip_channels: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        c1, c2, c3 = skip_channels
        self.bottleneck = nn.Sequential(
            nn.Conv2d(identity_channels, width * 8, 1, bias=False), nn.BatchNorm2d(width * 8), nn.ReLU(inplace=True),
            GatedConv(width * 8, width * 8),
        )
        self.up8 = GatedUpBlock(width * 8, c3, width * 4)
        self.up4 = GatedUpBlock(width * 4, c2, width * 2)
        self.up2 = GatedUpBlock(width * 2, c1, width)
        self.up1 = GatedUpBlock(width, 3, width)
        self.refine = GatedConv(width, width)
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)

    def forward(
        self, identity: torch.Tensor, skips: list[torch.Tensor], image: torch.Tensor, occlusion: torch.Tensor,
        extras: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Raw restoration ``[B, 3, S, S]`` in [-1, 1]; arguments as :meth:`UnmaskGenerator.forward`.
        ``extras``: features added to the skips of ``up1``, ``up2``, ``up4`` and ``up8`` (see
        :class:`EncodedGatedGenerator`)."""
        e1, e2, e4, e8 = extras or [None] * 4
        x = self.bottleneck(identity)
        x = self.up8(x, skips[2], occlusion, e8)
        x = self.up4(x, skips[1], occlusion, e4)
        x = self.up2(x, skips[0], occlusion, e2)
        x = self.up1(x, image, occlusion, e1)
        return torch.tanh(self.to_rgb(x + self.refine(x)))


class EncodedGatedGenerator(GatedGenerator):
    """:class:`GatedGenerator` with an encoder of its own: the recogniser's skips carry what
    identifies a face, not the colour and shape around the hole, and the plain gated generator reads
    the image itself only at full resolution. Four gated convolutions (strides 1, 2, 2, 2, the last
    stage dilated for a wider view) read the visible face and the occlusion map; at each scale a
    1x1 convolution adds their features to the decoder's skip. The 1x1 convolutions start at zero,
    so a gated generator's weights load into it unchanged (``strict=False``) and it starts as that
    generator did. About 0.5M more weights at width 32."""

    def __init__(self, identity_channels: int, skip_channels: tuple[int, int, int], width: int = 32) -> None:
        super().__init__(identity_channels, skip_channels, width)
        half = max(1, width // 2)
        self.encoder = nn.ModuleList([
            GatedConv(4, half),
            GatedConv(half, width, stride=2),
            GatedConv(width, width * 2, stride=2),
            nn.Sequential(GatedConv(width * 2, width * 4, stride=2), GatedConv(width * 4, width * 4, dilation=2)),
        ])
        # features at full size, 1/2, 1/4, 1/8 -> the skips of up1, up2, up4, up8
        self.inject = nn.ModuleList([nn.Conv2d(c, cout, 1) for c, cout in
                                     ((half, width), (width, width), (width * 2, width * 2), (width * 4, width * 4))])
        for conv in self.inject:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(
        self, identity: torch.Tensor, skips: list[torch.Tensor], image: torch.Tensor, occlusion: torch.Tensor
    ) -> torch.Tensor:
        """Raw restoration ``[B, 3, S, S]`` in [-1, 1]; arguments as :meth:`UnmaskGenerator.forward`."""
        x = torch.cat([image * (1.0 - occlusion), occlusion], 1)
        extras = []
        for stage, inject in zip(self.encoder, self.inject):
            x = stage(x)
            extras.append(inject(x))
        return super().forward(identity, skips, image, occlusion, extras)


GENERATORS = {"skip": UnmaskGenerator, "gated": GatedGenerator, "gated-encoder": EncodedGatedGenerator}


def create_generator(arch: str, identity_channels: int, skip_channels: tuple[int, int, int], width: int) -> nn.Module:
    """A generator by name: ``skip`` (MEER's first decoder), ``gated`` (issue 15's) or
    ``gated-encoder`` (``gated`` with an encoder of its own)."""
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator {arch!r}; choose from {', '.join(GENERATORS)}")
    return GENERATORS[arch](identity_channels, skip_channels, width)


def blend_weights(region: torch.Tensor, dilate: int = 0, feather: int = 0) -> torch.Tensor:
    """The composite's weight of the generated pixels, ``[B, 1, S, S]`` in [0, 1], from a 0/1
    ``region``: grown by ``dilate`` pixels (the predicted occlusion is coarse, and a mask edge it
    misses is the most visible artefact), then ramped down linearly over ``2 * feather`` pixels
    outside it, so restored and input pixels meet without a seam. The weight is exactly 1 on
    the grown region and exactly 0 beyond ``dilate + 2 * feather`` pixels from ``region``
    (chessboard distance): far pixels stay the input's own."""
    if dilate > 0:
        region = F.max_pool2d(region, 2 * dilate + 1, stride=1, padding=dilate)
    if feather > 0:
        size = 2 * feather + 1
        grown = F.max_pool2d(region, size, stride=1, padding=feather)
        # the box mean of the region grown by ``feather``: 1 on the region, falling by
        # 1 / (2 feather + 1) a pixel outside it; replicated edges keep a region that runs off the
        # image at 1 up to the border
        region = F.avg_pool2d(F.pad(grown, [feather] * 4, mode="replicate"), size, stride=1)
    return region


def composite(restored: torch.Tensor, image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Generated pixels where ``region`` ([B, 1, S, S], a weight in [0, 1]) is 1, the input's own
    where it is 0, a linear blend between.

    Where ``region`` is 0 the result is the input bit for bit, where it is 1 the generated pixel.
    """
    blended = region * restored + (1.0 - region) * image
    # not ``blended`` alone: 0 * NaN is NaN, and a pixel outside the region must stay the input's
    return torch.where(region > 0, blended, image)
