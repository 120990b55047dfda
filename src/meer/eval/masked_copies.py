"""Deterministic masked copies of test faces: every system and run sees the same masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meer.data.cutouts import MaskCutouts
from meer.data.faceset import FaceSet
from meer.data.masks import MASK_CLASSES, MaskRenderer


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


def paste_real_masks(faces: FaceSet, cutouts: MaskCutouts, seed: int = 0) -> MaskedCopies:
    """As :func:`render_test_masks`, with real masks cut out of photos (``meer cutouts``) instead of
    drawn ones: image ``i`` wears the cut-out drawn by ``(seed, i)``; its kind is ``real``."""
    n, s = len(faces), faces.size
    out = MaskedCopies(np.zeros((n, s, s, 3), np.uint8), np.zeros((n, s, s), np.uint8),
                       np.full(n, MASK_CLASSES.index("real"), np.int64))
    for i in range(n):
        out.images[i], out.occlusion[i] = cutouts.paste(np.asarray(faces.images[i]), np.random.default_rng([seed, i]))
    return out
