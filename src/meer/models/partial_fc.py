"""Class centres sharded across ranks, for identity counts that do not fit one device.

After insightface's Partial FC: rank ``r`` holds the centres of classes ``[start_r, end_r)``.
Embeddings (and labels) are gathered from every rank, each rank scores the global batch
against its own centres only, and the softmax normaliser and the target logit are summed
across ranks, so the loss equals the unsharded margin softmax over the global batch.
Memory for centres falls as ``1 / world_size``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from meer.models.heads import CombinedMargin, init_centres


def shard_bounds(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    per_rank = -(-num_classes // world_size)
    start = min(num_classes, rank * per_rank)
    return start, min(num_classes, start + per_rank)


class ShardedMarginSoftmaxLoss(nn.Module):
    """``(embeddings [B, D], labels [B]) -> loss``, the same value on every rank.

    Gradients: the differentiable all-reduces send every rank's gradient back to every rank,
    which counts the shard's own gradient ``world_size`` times; a hook divides it back. The
    embeddings' gradient then has the scale DDP expects (DDP averages it over ranks).
    """

    def __init__(self, num_classes: int, embedding_dim: int, margin: CombinedMargin, seed: int = 0) -> None:
        super().__init__()
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.num_classes = num_classes
        self.start, self.end = shard_bounds(num_classes, self.rank, self.world_size)
        self.margin = margin
        self.weight = nn.Parameter(init_centres(self.start, self.end, embedding_dim, seed))
        if self.world_size > 1:
            self.weight.register_hook(lambda grad: grad / self.world_size)

    def gather(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world_size == 1:
            return embeddings, labels
        all_labels = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(all_labels, labels)
        return torch.cat(dist_nn.all_gather(embeddings)), torch.cat(all_labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = self.gather(embeddings, labels)
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        local = torch.where((labels >= self.start) & (labels < self.end), labels - self.start, -1)
        logits = self.margin(cosine, local)  # [B_global, C_local]
        peak = logits.detach().amax(1)
        if self.world_size > 1:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        sum_exp = torch.exp(logits - peak[:, None]).sum(1)
        has = local >= 0
        target = torch.zeros_like(peak).masked_scatter(has, logits[has, local[has]])
        if self.world_size > 1:
            sum_exp = dist_nn.all_reduce(sum_exp)
            target = dist_nn.all_reduce(target)
        return (torch.log(sum_exp) + peak - target).mean()

    def full_weight(self) -> torch.Tensor:
        """All centres ``[num_classes, D]`` (a collective call: every rank must make it)."""
        if self.world_size == 1:
            return self.weight.detach()
        per_rank = -(-self.num_classes // self.world_size)
        padded = torch.zeros(per_rank, self.weight.shape[1], device=self.weight.device, dtype=self.weight.dtype)
        padded[: len(self.weight)] = self.weight.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat(parts)[: self.num_classes]

    def load_full_weight(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(weight[self.start : self.end])
