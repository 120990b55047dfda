"""Run under torchrun by test_distributed.py: checks that need several real processes."""

import json
import sys

import torch
import torch.distributed as dist

from meer.models.heads import MarginSoftmaxLoss, make_margin
from meer.models.partial_fc import ShardedMarginSoftmaxLoss


def sharded_head(out_path: str) -> None:
    """Sharded loss and gradients against the unsharded head on the gathered batch."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    num_classes, dim, local_batch = 11, 6, 5  # 11 classes: uneven shards
    generator = torch.Generator().manual_seed(0)
    full_weight = torch.randn(num_classes, dim, generator=generator)
    all_embeddings = torch.randn(world * local_batch, dim, generator=generator)
    all_labels = torch.randint(0, num_classes, (world * local_batch,), generator=generator)
    margin = make_margin("arcface", scale=16.0, m2=0.4)

    reference = MarginSoftmaxLoss(num_classes, dim, margin)
    reference.load_full_weight(full_weight)
    ref_embeddings = all_embeddings.clone().requires_grad_(True)
    ref_loss = reference(ref_embeddings, all_labels)
    ref_loss.backward()

    sharded = ShardedMarginSoftmaxLoss(num_classes, dim, margin)
    sharded.load_full_weight(full_weight)
    mine = slice(rank * local_batch, (rank + 1) * local_batch)
    embeddings = all_embeddings[mine].clone().requires_grad_(True)
    loss = sharded(embeddings, all_labels[mine])
    loss.backward()

    report = {
        "rank": rank,
        "loss": float(loss),
        "ref_loss": float(ref_loss),
        # DDP averages the backbone's gradient over ranks, so each rank carries world x its share.
        "embedding_grad_err": float((embeddings.grad / world - ref_embeddings.grad[mine]).abs().max()),
        "weight_grad_err": float((sharded.weight.grad - reference.weight.grad[sharded.start : sharded.end]).abs().max()),
        "full_weight_err": float((sharded.full_weight() - full_weight).abs().max()),
        "shard": [sharded.start, sharded.end],
    }
    with open(f"{out_path}.{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    {"sharded_head": sharded_head}[sys.argv[1]](*sys.argv[2:])
