"""Batched forward passes over aligned uint8 faces: embeddings, mask classes, restorations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from meer.data.dataset import to_uint8
from meer.models.meer import MEER


def batches(images: np.ndarray, batch_size: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, float tensor [b, 3, S, S] in [-1, 1])`` from uint8 ``[N, S, S, 3]``."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size]))  # a copy: read-only caches warn
        yield start, chunk.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A progress bar over ``total`` images that vanishes when done (or prints nothing)."""
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


def embed_images(
    model: MEER,
    images: np.ndarray,
    batch_size: int = 256,
    flip: bool = False,
    progress: bool = False,
    desc: str = "embed",
) -> np.ndarray:
    """Unit-norm embeddings ``[N, D]`` (float32) of aligned uint8 faces ``[N, S, S, 3]``."""
    return embed_and_classify(model, images, batch_size, flip, progress, desc)[0]


@torch.no_grad()
def mask_classes(model: MEER, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The mask classifier's class ``int64 [N]`` (0 = no mask) of aligned uint8 faces
    ``[N, S, S, 3]``; the model needs its decoupling module, whose mask head says it."""
    if model.decouple is None:
        raise ValueError("this model has no decoupling module, so it has no mask classifier")
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(len(images), np.int64)
    for start, x in batches(images, batch_size, device):
        out[start : start + len(x)] = model(x).decoupled.mask_logits.argmax(1).cpu().numpy()
    return out


@torch.no_grad()
def embed_and_classify(
    model: MEER,
    images: np.ndarray,
    batch_size: int = 256,
    flip: bool = False,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`embed_images`'s embeddings and :func:`mask_classes`'s classes of aligned uint8 faces
    ``[N, S, S, 3]`` from the same forward pass (the classes from the unmirrored faces); the
    classes are None when the model has no mask classifier."""
    model.eval()
    device = next(model.parameters()).device
    embeddings = np.zeros((len(images), model.embedding_dim), np.float32)
    classes = np.zeros(len(images), np.int64) if model.decouple is not None else None
    with progress_bar(len(images), desc, progress) as bar:
        for start, x in batches(images, batch_size, device):
            encoded = model(x)
            embeddings[start : start + len(x)] = model.embed(x, flip, encoded).cpu().numpy()
            if classes is not None:
                classes[start : start + len(x)] = encoded.decoupled.mask_logits.argmax(1).cpu().numpy()
            bar.update(len(x))
    return embeddings, classes


@dataclass
class Restorations:
    restored: np.ndarray  # uint8 [N, S, S, 3], composited
    occlusion: np.ndarray  # float32 [N, S, S], predicted probability
    region: np.ndarray  # float32 [N, S, S], the composite's weight of the generated pixels (0: the input's own)
    mask_type: np.ndarray  # int64 [N], predicted mask class (0 = none)


@torch.no_grad()
def unmask_images(
    model: MEER, images: np.ndarray, batch_size: int = 128, progress: bool = False, masked_only: bool = False,
    flip: bool = False,
) -> Restorations:
    """Run the generator on uint8 faces ``[N, S, S, 3]``. With ``masked_only`` it runs only on the
    faces the mask classifier finds masked; the others are returned as they are (region empty,
    occlusion the recogniser's coarse prediction). ``flip``: see :meth:`MEER.unmask`."""
    model.eval()
    device = next(model.parameters()).device
    n, s = len(images), images.shape[1]
    result = Restorations(
        np.array(images), np.zeros((n, s, s), np.float32), np.zeros((n, s, s), np.float32), np.zeros(n, np.int64)
    )
    with progress_bar(n, "unmask", progress) as bar:
        for start, x in batches(images, batch_size, device):
            encoded = model(x)
            mask_type = encoded.decoupled.mask_logits.argmax(1)
            result.mask_type[start : start + len(x)] = mask_type.cpu().numpy()
            rows = (mask_type != 0) if masked_only else torch.ones_like(mask_type, dtype=torch.bool)
            if not rows.all():
                result.occlusion[start : start + len(x)] = model.occlusion_probability(encoded, s, x)[:, 0].cpu().numpy()
            if rows.any():
                unmasked = (model.unmask(x, encoded, flip) if rows.all()
                            else model.unmask(x[rows], encoded.select(rows), flip))
                index = start + rows.nonzero()[:, 0].cpu().numpy()
                result.restored[index] = to_uint8(unmasked.restored)
                result.occlusion[index] = unmasked.occlusion[:, 0].cpu().numpy()
                result.region[index] = unmasked.region[:, 0].float().cpu().numpy()
            bar.update(len(x))
    return result
