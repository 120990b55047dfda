"""LFW photos for the bench scripts that measure something on real faces.

Measurements that set a constant of the package (a template, a landmark layout) use only
photos of people in no pair of View-2 folds 6-10, the test folds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from meer.data.protocols import read_lfw_pairs

TEST_FOLDS = [5, 6, 7, 8, 9]  # View-2 folds 6-10, 0-based


def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` of ``files``, evenly spaced through the sorted list."""
    files = sorted(files)
    return [files[i] for i in np.linspace(0, len(files) - 1, count).astype(int)]


def training_photos(root: Path, count: int) -> list[Path]:
    """``count`` LFW photos under ``root`` of people in no test-fold pair, evenly spaced."""
    test_people = read_lfw_pairs(root / "pairs.txt").people(TEST_FOLDS)
    return spread([p for p in root.glob("*/*.jpg") if p.parent.name not in test_people], count)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
