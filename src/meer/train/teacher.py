"""The frozen teacher's embeddings of the training faces, computed once per run and cached.

Teacher-guided training (``teacher.kind`` in the config) needs, for every sample, the
teacher's embedding of the *clean* face as it is fed (mirrored or not). Those targets never
change, so they are computed in one pass before training, both orientations, and kept next
to the run (``teacher_embeddings.safetensors``) with a fingerprint of the faces they belong to:
a resumed run reads them back instead of paying the pass again.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from meer.data.faceset import FaceSet
from meer.inference.batched import batches, progress_bar
from meer.io import atomic_write

log = logging.getLogger(__name__)

CACHE_FILE = "teacher_embeddings.safetensors"


def fingerprint(faces: FaceSet) -> str:
    """A digest of the labels and a spread sample of the images: changes when the data does."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(faces.labels).tobytes())
    step = max(1, len(faces) // 64)
    digest.update(np.ascontiguousarray(faces.images[::step]).tobytes())
    digest.update(str(faces.images.shape).encode())
    return digest.hexdigest()


@torch.no_grad()
def embed_both_ways(teacher: nn.Module, images: np.ndarray, batch_size: int, progress: bool = False) -> torch.Tensor:
    """Unit-norm teacher embeddings ``[N, 2, D]``: index 0 the face as it is, 1 mirrored."""
    device = next(teacher.parameters()).device
    out = []
    with progress_bar(len(images), "teacher", progress) as bar:
        for _, x in batches(images, batch_size, device):
            pair = torch.stack([teacher(x), teacher(torch.flip(x, dims=[3]))], 1)
            out.append(F.normalize(pair.float(), dim=-1).cpu())
            bar.update(len(x))
    return torch.cat(out)


def read_targets(path: Path, faces: FaceSet) -> torch.Tensor | None:
    """The targets stored at ``path`` if they belong to ``faces`` (same fingerprint), else None."""
    if not Path(path).is_file():
        return None
    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("fingerprint") != fingerprint(faces):
            return None
        cached = f.get_tensor("targets")
    return cached if cached.shape[0] == len(faces) else None


def write_targets(path: Path, faces: FaceSet, targets: torch.Tensor) -> None:
    """Store ``targets`` of ``faces`` at ``path`` (atomically), fingerprinted for :func:`read_targets`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"targets": targets.contiguous()}, tmp,
                                             metadata={"fingerprint": fingerprint(faces)}))


def teacher_targets(teacher: nn.Module, faces: FaceSet, run_dir: Path, batch_size: int, env,
                    progress: bool = False) -> torch.Tensor:
    """``[N, 2, D]`` targets for ``faces``, read from the run's cache when it matches."""
    path = Path(run_dir) / CACHE_FILE
    cached = read_targets(path, faces)
    if cached is not None:
        log.info("teacher embeddings: read %d from %s", len(faces), path)
        return cached
    if path.is_file():
        log.warning("teacher embeddings in %s belong to other data; computing them again", path)
    log.info("teacher embeddings: computing %d faces x 2 orientations", len(faces))
    targets = embed_both_ways(teacher, faces.images, batch_size, progress)
    if env.is_main:
        write_targets(path, faces, targets)
    return targets
