"""Evaluation protocols on real photos, as lists of source-relative image paths.

* LFW ``pairs.txt`` (verification, k folds of same / different pairs);
* a folder of real masked faces ``<person>/masked_*`` + ``<person>/unmasked_*`` (RMFRD):
  masked probes identified against the unmasked gallery.

Parsing is kept apart from the metrics (:mod:`meer.eval`); paths resolve to cache rows with
:meth:`meer.data.cache.FaceCache.rows`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meer.data.formats import IMAGE_EXTENSIONS


@dataclass
class PairList:
    """Verification pairs: ``first[p]`` and ``second[p]`` are source-relative image paths.

    fold: int64 [P] fold index in ``range(num_folds)``
    same: bool [P] True for same-identity pairs
    """

    first: list[str]
    second: list[str]
    same: np.ndarray
    fold: np.ndarray
    num_folds: int

    def __len__(self) -> int:
        return len(self.same)

    def people(self, folds: Sequence[int]) -> set[str]:
        """The names of everyone in a pair of ``folds`` (0-based fold indices)."""
        keep = np.tile(np.isin(self.fold, folds), 2)
        return {key.split("/")[0] for key, kept in zip(self.first + self.second, keep) if kept}


def lfw_image_path(name: str, number: int) -> str:
    """``Name/Name_0001.jpg``, the LFW naming pairs.txt refers to."""
    return f"{name}/{name}_{number:04d}.jpg"


def read_lfw_pairs(path: str | os.PathLike) -> PairList:
    """Parse an LFW pairs file.

    View 2 (``pairs.txt``) starts with ``folds per_fold`` (``10 300``); each fold then has
    ``per_fold`` same lines ``Name i j`` followed by ``per_fold`` different lines
    ``Name1 i Name2 j``. View 1 files (``pairsDevTrain.txt``) start with ``per_fold`` alone and
    are read as one fold. Raises ``ValueError`` naming the line that does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such pairs file: {path}")
    lines = [(n, line.split()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    header = lines[0][1]
    try:
        folds, per_fold = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    except (ValueError, IndexError):
        raise ValueError(f"{path}:1: expected a header 'folds pairs_per_fold', got {' '.join(header)!r}") from None
    body = lines[1:]
    if len(body) != 2 * folds * per_fold:
        raise ValueError(
            f"{path}: header says {folds} folds x {per_fold} same + {per_fold} different pairs "
            f"= {2 * folds * per_fold} lines, found {len(body)}"
        )
    first, second, same, fold = [], [], [], []
    for index, (number, fields) in enumerate(body):
        is_same = index % (2 * per_fold) < per_fold
        try:
            if is_same:
                if len(fields) != 3:
                    raise ValueError
                name, i, j = fields
                a, b = lfw_image_path(name, int(i)), lfw_image_path(name, int(j))
            else:
                if len(fields) != 4:
                    raise ValueError
                name1, i, name2, j = fields
                a, b = lfw_image_path(name1, int(i)), lfw_image_path(name2, int(j))
        except ValueError:
            expected = "'Name i j'" if is_same else "'Name1 i Name2 j'"
            raise ValueError(f"{path}:{number}: expected {expected}, got {' '.join(fields)!r}") from None
        first.append(a)
        second.append(b)
        same.append(is_same)
        fold.append(index // (2 * per_fold))
    return PairList(first, second, np.array(same, bool), np.array(fold, np.int64), folds)


@dataclass
class MaskedProtocol:
    """Identification of real masked faces against an unmasked gallery.

    probes / gallery: source-relative paths (``person/masked_1.jpg``)
    probe_labels / gallery_labels: int64 index into ``names``
    unmatched: masked probes whose person has no unmasked image (left out of ``probes``)
    """

    probes: list[str]
    probe_labels: np.ndarray
    gallery: list[str]
    gallery_labels: np.ndarray
    names: list[str]
    unmatched: list[str]


def masked_folder_protocol(root: str | os.PathLike) -> MaskedProtocol:
    """Build the probe / gallery split of a ``<person>/masked_*`` + ``<person>/unmasked_*`` folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    probes: dict[str, list[str]] = {}
    gallery: dict[str, list[str]] = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(person.iterdir()):
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            key = f"{person.name}/{file.name}"
            if file.name.startswith("masked_"):
                probes.setdefault(person.name, []).append(key)
            elif file.name.startswith("unmasked_"):
                gallery.setdefault(person.name, []).append(key)
    if not gallery:
        raise ValueError(f"no <person>/unmasked_* images in {root}")
    names = sorted(gallery)
    label = {name: i for i, name in enumerate(names)}
    probe_keys = [k for person in names for k in probes.get(person, [])]
    unmatched = [k for person in sorted(probes) if person not in label for k in probes[person]]
    if not probe_keys:
        raise ValueError(f"no <person>/masked_* images with an unmasked gallery in {root}")
    return MaskedProtocol(
        probes=probe_keys,
        probe_labels=np.array([label[k.split("/")[0]] for k in probe_keys], np.int64),
        gallery=[k for person in names for k in gallery[person]],
        gallery_labels=np.array([label[p] for p in names for _ in gallery[p]], np.int64),
        names=names,
        unmatched=unmatched,
    )
