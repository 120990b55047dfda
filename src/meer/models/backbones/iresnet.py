"""The ArcFace IResNet family (Deng et al., insightface ``arcface_torch``), with a width multiplier.

``forward_features`` returns the four stage maps (strides 2, 4, 8, 16), which the mask
decoupling module and the generator need; ``forward`` gives the embedding ``[B, D]``.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """BN - conv - BN - PReLU - conv - BN, plus the shortcut (the "improved" residual unit)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            conv3x3(cin, cout),
            nn.BatchNorm2d(cout, eps=1e-5),
            nn.PReLU(cout),
            conv3x3(cout, cout, stride),
            nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class EmbeddingHead(nn.Module):
    """BN - dropout - flatten - FC - BN: the last feature map ``[B, C, h, w]`` to ``[B, D]``."""

    def __init__(self, channels: int, spatial: int, embedding_dim: int, dropout: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial * spatial, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad_(False)  # as in arcface_torch: a fixed-scale BN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn(x))
        return self.features(self.fc(torch.flatten(x, 1)))


class IResNet(nn.Module):
    def __init__(
        self,
        layers: tuple[int, int, int, int],
        width: float = 1.0,
        input_size: int = 112,
        embedding_dim: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"IResNet input_size must be a multiple of 16, got {input_size}")
        stem = max(8, round(64 * width))
        self.channels = tuple(max(8, round(c * width)) for c in (64, 128, 256, 512))
        self.strides = (2, 4, 8, 16)
        self.stem = nn.Sequential(conv3x3(3, stem), nn.BatchNorm2d(stem, eps=1e-5), nn.PReLU(stem))
        stages, cin = [], stem
        for blocks, cout in zip(layers, self.channels):
            stage = [IBasicBlock(cin, cout, stride=2)] + [IBasicBlock(cout, cout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = EmbeddingHead(cin, input_size // 16, embedding_dim, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` -> the four stage maps ``[B, C_i, S/2^(i+1), S/2^(i+1)]``."""
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> embedding ``[B, D]`` (not normalised)."""
        return self.head(self.forward_features(x)[-1])


def create_iresnet(name: str, **kwargs) -> IResNet:
    """``create_iresnet("iresnet50", width=1.0, input_size=112, embedding_dim=512)``."""
    if name not in LAYERS:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(LAYERS)}")
    return IResNet(LAYERS[name], **kwargs)
