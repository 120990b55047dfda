"""Margin softmax behaviour found missing by mutation testing (issue #18)."""

import math

import pytest
import torch

from meer.models.heads import CombinedMargin, MarginSoftmaxLoss, init_centres, make_margin
from meer.models.partial_fc import ShardedMarginSoftmaxLoss


def test_heads_built_without_a_seed_start_from_the_same_centres():
    # The plain and the sharded head must agree on their starting centres, seed given or not.
    margin = make_margin("arcface", 16.0)
    plain, sharded = MarginSoftmaxLoss(9, 4, margin), ShardedMarginSoftmaxLoss(9, 4, margin)
    assert torch.equal(plain.full_weight(), sharded.full_weight())
    assert torch.equal(plain.full_weight(), init_centres(0, 9, 4, seed=0))


def test_default_margins_are_arcface_at_scale_64_and_margin_half():
    # ArcFace's published setting (s = 64, m = 0.5) is what the defaults build.
    default = CombinedMargin()
    assert (default.scale, default.m1, default.m2, default.m3) == (64.0, 1.0, 0.5, 0.0)
    for kind in ("arcface", "combined"):
        margin = make_margin(kind, 64.0)
        assert (margin.scale, margin.m1, margin.m2, margin.m3) == (64.0, 1.0, 0.5, 0.0)
    cosface = make_margin("cosface", 64.0)
    assert (cosface.m1, cosface.m2, cosface.m3) == (1.0, 0.0, 0.0)


def test_arcface_is_finite_with_finite_gradients_for_cosines_of_exactly_one_and_minus_one():
    cosine = torch.tensor([[1.0, 0.2], [-1.0, 0.3], [0.0, 1.0]], requires_grad=True)
    logits = make_margin("arcface", 2.0, m2=0.5)(cosine, torch.tensor([0, 0, 1]))
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(cosine.grad).all()
    assert logits[0, 0].item() == pytest.approx(2 * math.cos(0.5), abs=1e-3)
    assert logits[1, 0].item() == pytest.approx(2 * (-1.0 - 0.5 * math.sin(0.5)), abs=1e-5)


def test_cosface_is_a_pure_shift_so_the_target_gradient_is_the_scale_even_at_cosine_one():
    cosine = torch.tensor([[1.0, 0.5], [0.3, -1.0], [0.2, 0.9]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    logits = make_margin("cosface", 4.0, m3=0.25)(cosine, labels)
    logits.sum().backward()
    assert torch.equal(cosine.grad, torch.full_like(cosine, 4.0))
    expected = cosine.detach().clone()
    expected[[0, 1, 2], labels] -= 0.25
    assert torch.equal(logits.detach(), 4.0 * expected)


def test_the_margin_leaves_the_cosine_it_is_given_alone():
    cosine = torch.tensor([[0.5, 0.2], [0.1, 0.7]])
    before = cosine.clone()
    make_margin("arcface", 8.0)(cosine, torch.tensor([0, 1]))
    make_margin("cosface", 8.0, m3=0.3)(cosine, torch.tensor([1, -1]))
    assert torch.equal(cosine, before)


def test_centres_are_drawn_with_standard_deviation_one_hundredth():
    centres = init_centres(0, 5000, 16, seed=3)
    assert centres.shape == (5000, 16)
    assert centres.std().item() == pytest.approx(0.01, rel=0.02)
    assert centres.mean().abs().item() < 0.001


def test_a_shard_with_no_classes_is_an_empty_matrix_of_the_embedding_width():
    # more ranks than classes: the last ranks hold no centres
    for start in (0, 3, 4096, 5000):
        empty = init_centres(start, start, 8, seed=1)
        assert empty.shape == (0, 8)


def test_full_weight_is_outside_autograd():
    head = MarginSoftmaxLoss(4, 3, make_margin("arcface", 8.0))
    assert head.weight.requires_grad and not head.full_weight().requires_grad


def test_a_margined_angle_of_exactly_pi_still_takes_the_cosine():
    # theta = acos(0) = pi/2 in float32 and m = the same: theta + m is float32's pi exactly.
    half_pi = float(torch.acos(torch.tensor(0.0)))
    assert torch.tensor(half_pi) + torch.tensor(half_pi) == torch.tensor(math.pi)
    logits = CombinedMargin(1.0, 1.0, half_pi, 0.0)(torch.tensor([[0.0, 0.5]]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(-1.0, abs=1e-6)  # cos(pi); the fallback would give -pi/2
    past = CombinedMargin(1.0, 1.0, half_pi + 1e-3, 0.0)(torch.tensor([[0.0]]), torch.tensor([0]))
    assert past[0, 0].item() == pytest.approx(-(half_pi + 1e-3) * math.sin(half_pi + 1e-3), abs=1e-5)
