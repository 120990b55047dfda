"""Batched inference over aligned faces: embeddings, restorations, deterministic test masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from meer.data.dataset import to_uint8
from meer.data.faceset import FaceSet
from meer.data.masks import MaskRenderer
from meer.models.meer import MEER


def batches(images: np.ndarray, batch_size: int, device: torch.device):
    """Yield ``(start, float tensor [b, 3, S, S] in [-1, 1])`` from uint8 ``[N, S, S, 3]``."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        yield start, chunk.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


@torch.no_grad()
def embed_images(
    model: MEER,
    images: np.ndarray,
    batch_size: int = 256,
    flip: bool = False,
    progress: bool = False,
    desc: str = "embed",
) -> np.ndarray:
    """Unit-norm embeddings ``[N, D]`` (float32) of aligned uint8 faces ``[N, S, S, 3]``."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(images), model.backbone.head.fc.out_features), np.float32)
    with _progress(len(images), desc, progress) as bar:
        for start, x in batches(images, batch_size, device):
            out[start : start + len(x)] = model.embed(x, flip=flip).cpu().numpy()
            bar.update(len(x))
    return out


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


@dataclass
class Restorations:
    restored: np.ndarray  # uint8 [N, S, S, 3], composited
    occlusion: np.ndarray  # float32 [N, S, S], predicted probability
    region: np.ndarray  # uint8 [N, S, S], repainted pixels
    mask_type: np.ndarray  # int64 [N], predicted mask class (0 = none)


@torch.no_grad()
def unmask_images(model: MEER, images: np.ndarray, batch_size: int = 128, progress: bool = False) -> Restorations:
    """Run the generator on uint8 faces ``[N, S, S, 3]``."""
    model.eval()
    device = next(model.parameters()).device
    n, s = len(images), images.shape[1]
    result = Restorations(
        np.zeros_like(images), np.zeros((n, s, s), np.float32), np.zeros((n, s, s), np.uint8), np.zeros(n, np.int64)
    )
    with _progress(n, "unmask", progress) as bar:
        for start, x in batches(images, batch_size, device):
            encoded = model(x)
            unmasked = model.unmask(x, encoded)
            end = start + len(x)
            result.restored[start:end] = to_uint8(unmasked.restored)
            result.occlusion[start:end] = unmasked.occlusion[:, 0].cpu().numpy()
            result.region[start:end] = unmasked.region[:, 0].byte().cpu().numpy()
            result.mask_type[start:end] = encoded.decoupled.mask_logits.argmax(1).cpu().numpy()
            bar.update(len(x))
    return result


@dataclass
class MaskedCopies:
    images: np.ndarray  # uint8 [N, S, S, 3]
    occlusion: np.ndarray  # uint8 [N, S, S]
    mask_type: np.ndarray  # int64 [N]


def render_test_masks(faces: FaceSet, seed: int = 0, types: tuple[str, ...] = ("surgical", "n95", "cloth")) -> MaskedCopies:
    """A masked copy of every face; image ``i``'s mask depends only on ``(seed, i)``, so every
    system and every run is tested on exactly the same masked faces."""
    renderer = MaskRenderer(types=types)
    n, s = len(faces), faces.size
    out = MaskedCopies(np.zeros((n, s, s, 3), np.uint8), np.zeros((n, s, s), np.uint8), np.zeros(n, np.int64))
    for i in range(n):
        render = renderer(np.asarray(faces.images[i]), np.asarray(faces.landmarks[i]), np.random.default_rng([seed, i]))
        out.images[i], out.occlusion[i], out.mask_type[i] = render.masked, render.occlusion, render.mask_type
    return out
