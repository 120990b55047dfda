"""Small building blocks shared by the MEER modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def grad_reverse(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity on the forward pass; multiplies the gradient by ``-strength`` on the way back.

    The decoupling classifier behind it learns to find mask information in the identity
    part, while the backbone is pushed to remove it (Ganin & Lempitsky's domain-adversarial
    trick).
    """
    return _GradientReversal.apply(x, strength)


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` to ``size`` (``align_corners=False``), in the layout of ``x``.

    It runs in the channels-last layout, which gives the same numbers to float32 rounding (bit
    for bit for the decoupling module's maps; the CPU kernel's vector arithmetic can differ in
    the last bit on larger ones): for the small, deep maps MEER resizes, PyTorch's
    default-layout kernels are slow (on CUDA one thread per output pixel, looping over
    batch x channels: 16 of the 32 ms of an IResNet-50 embedding batch on an H200; on the CPU
    about 3x this; BENCHMARKS.md section 3b).
    """
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False)
    return out.contiguous(memory_format=layout)


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        act if act is not None else nn.PReLU(cout),
    )
