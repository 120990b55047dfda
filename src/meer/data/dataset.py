"""Training samples: an aligned face, a synthetic mask rendered on the fly, and the exact pair.

Each sample is a dict of tensors:
``masked`` / ``clean`` [3, S, S] in [-1, 1], ``occlusion`` [1, S, S] (1 = covered),
``mask_type`` [] (0 = no mask), ``label`` [], ``index`` [] (the row in the face set),
``flipped`` [] (1 when the sample is mirrored) and ``twin`` [] (1.0 when ``clean`` is the
same face without the mask).

A photo of a real mask (a row the face set flags ``masked``) gets no synthetic mask: it is
its own ``masked`` face, of mask class ``real``, with no clean twin (``twin`` 0, ``clean`` the
photo itself, ``occlusion`` all zeros: unknown). The losses that compare with the clean twin
or the occlusion map leave such samples out (:mod:`meer.train.objectives`). With ``cutouts``
(masks cut out of such photos, :mod:`meer.data.cutouts`), a share of the masks drawn for the
other faces is a pasted real mask instead: class ``real``, with its clean twin and occlusion map.

Randomness is a pure function of ``(seed, epoch, index)``, so a resumed run, a DDP rank or a
DataLoader worker all draw exactly the same masks for the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from meer.data.cutouts import MaskCutouts
from meer.data.faceset import FaceSet
from meer.data.masks import MASK_TYPES, REAL_MASK, MaskRenderer

# Mirroring a face swaps its left and right landmarks.
FLIP_ORDER = [1, 0, 2, 4, 3]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1] (one image or a batch)."""
    # np.require copies only a read-only (memory-mapped cache) or non-contiguous array, which torch wants writable
    return torch.from_numpy(np.require(images, requirements=["C", "W"])).movedim(-1, -3).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def hflip(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = image.shape[1]
    flipped = landmarks[FLIP_ORDER].copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    return image[:, ::-1], flipped


class MaskedFaces(Dataset):
    """A :class:`FaceSet` with masks drawn per sample. Index with ``epoch * len(self) + i``."""

    def __init__(
        self,
        faces: FaceSet,
        renderer: MaskRenderer | None,
        mask_prob: float = 0.5,
        hflip: bool = True,
        seed: int = 0,
        cutouts: MaskCutouts | None = None,
        cutout_share: float = 0.0,
    ) -> None:
        if mask_prob > 0 and renderer is None:
            raise ValueError("mask_prob > 0 needs a mask renderer")
        if cutout_share > 0 and cutouts is None:
            raise ValueError("cutout_share > 0 needs mask cut-outs")
        self.faces = faces
        self.renderer = renderer
        self.mask_prob = mask_prob
        self.flip = hflip
        self.seed = seed
        self.real = faces.real_masked
        self.cutouts = cutouts
        self.cutout_share = cutout_share

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(int(key), len(self.faces))
        rng = np.random.default_rng([self.seed, epoch, index])
        image = np.asarray(self.faces.images[index])
        landmarks = np.asarray(self.faces.landmarks[index], dtype=np.float32)
        flipped = bool(self.flip and rng.random() < 0.5)
        if flipped:
            image, landmarks = hflip(image, landmarks)
        masked, occlusion, mask_type, twin = image, np.zeros(image.shape[:2], np.uint8), 0, 1.0
        if self.real[index]:
            mask_type, twin = REAL_MASK, 0.0
        elif rng.random() < self.mask_prob:
            if self.cutout_share > 0 and rng.random() < self.cutout_share:
                (masked, occlusion), mask_type = self.cutouts.paste(image, rng), REAL_MASK
            else:
                render = self.renderer(image, landmarks, rng)
                masked, occlusion, mask_type = render.masked, render.occlusion, render.mask_type
        return {
            "masked": to_tensor(masked),
            "clean": to_tensor(image),
            "occlusion": torch.from_numpy(np.ascontiguousarray(occlusion)).float()[None],
            "mask_type": torch.tensor(mask_type, dtype=torch.long),
            "label": torch.tensor(int(self.faces.labels[index]), dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
            "flipped": torch.tensor(int(flipped), dtype=torch.long),
            "twin": torch.tensor(twin),
        }


def mask_renderer(types: list[str]) -> MaskRenderer:
    unknown = [t for t in types if t not in MASK_TYPES[1:]]
    if unknown:
        raise ValueError(f"unknown mask type {unknown[0]!r}; choose from {MASK_TYPES[1:]}")
    return MaskRenderer(types=tuple(types))


class StepSampler(Sampler[list[int]]):
    """Batches of ``epoch * n + index`` keys, one batch per training step, forever.

    Each epoch is a fresh permutation drawn from ``(seed, epoch)``; each rank takes its own
    slice of the global batch. Starting at ``start_step`` resumes the exact stream, which is
    what makes a killed run continue as if it had never stopped.

    With ``probabilities`` (float [n], from mixed sources' weights) each step's global batch is
    drawn instead from ``(seed, step)``, without repeats inside the batch, by those
    probabilities; its keys are ``step * n + index`` (a fresh mask draw for every step).
    """

    def __init__(
        self, size: int, batch_size: int, seed: int = 0, start_step: int = 0, rank: int = 0, world_size: int = 1,
        probabilities: np.ndarray | None = None,
    ) -> None:
        if size < batch_size * world_size:
            raise ValueError(f"dataset of {size} samples is smaller than one global batch ({batch_size * world_size})")
        if probabilities is not None and np.count_nonzero(probabilities) < batch_size * world_size:
            raise ValueError("fewer rows can be drawn than one global batch holds")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.steps_per_epoch = size // (batch_size * world_size)
        self.probabilities = probabilities

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        global_batch = self.batch_size * self.world_size
        start = self.rank * self.batch_size
        while self.probabilities is not None:
            rng = np.random.default_rng([self.seed, step])
            drawn = rng.choice(self.size, global_batch, replace=False, p=self.probabilities)
            yield [step * self.size + int(i) for i in drawn[start : start + self.batch_size]]
            step += 1
        while True:
            epoch, within = divmod(step, self.steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            start = within * global_batch + self.rank * self.batch_size
            yield [epoch * self.size + int(i) for i in order[start : start + self.batch_size]]
            step += 1

    def __len__(self) -> int:  # an endless stream; the trainer counts steps
        return 2**62
