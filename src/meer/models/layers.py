"""Small building blocks shared by the MEER modules."""

from __future__ import annotations

import torch
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


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        act if act is not None else nn.PReLU(cout),
    )
