"""Margin softmax behaviour found missing by mutation testing (issue #18)."""

import torch

from meer.models.heads import MarginSoftmaxLoss, init_centres, make_margin
from meer.models.partial_fc import ShardedMarginSoftmaxLoss


def test_heads_built_without_a_seed_start_from_the_same_centres():
    # The plain and the sharded head must agree on their starting centres, seed given or not.
    margin = make_margin("arcface", 16.0)
    plain, sharded = MarginSoftmaxLoss(9, 4, margin), ShardedMarginSoftmaxLoss(9, 4, margin)
    assert torch.equal(plain.full_weight(), sharded.full_weight())
    assert torch.equal(plain.full_weight(), init_centres(0, 9, 4, seed=0))
