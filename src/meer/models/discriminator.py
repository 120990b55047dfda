"""A PatchGAN discriminator with spectral normalisation (Isola et al.; Miyato et al.).

It scores overlapping patches of a face as real or restored, which pushes the generator
towards sharp, plausible texture inside the repainted region.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    def __init__(self, width: int = 64, layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        channels = width
        for i in range(1, layers):
            out = width * min(2**i, 8)
            blocks += [spectral_norm(nn.Conv2d(channels, out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            channels = out
        out = width * min(2**layers, 8)
        blocks += [spectral_norm(nn.Conv2d(channels, out, 3, 1, 1)), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*blocks)
        self.score = spectral_norm(nn.Conv2d(out, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor, return_features: bool = False):
        """``[B, 3, S, S]`` -> patch scores ``[B, 1, S/2^layers, S/2^layers]``
        (and the intermediate activations for feature matching)."""
        features = []
        x = image
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        scores = self.score(x)
        return (scores, features) if return_features else scores
