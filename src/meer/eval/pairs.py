"""Verification pairs and the three masked settings (docs/design.md, Protocols).

U-U: both faces unmasked. M-U: the second face of each pair masked. M-M: both masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SETTINGS = ("U-U", "M-U", "M-M")


@dataclass
class Pairs:
    first: np.ndarray  # int64 [P] row of the first face
    second: np.ndarray  # int64 [P]
    same: np.ndarray  # bool [P]
    fold: np.ndarray  # int64 [P], pairs ordered by fold

    def __len__(self) -> int:
        return len(self.same)


def make_pairs(labels: np.ndarray, folds: int = 10, per_fold: int = 300, seed: int = 0) -> Pairs:
    """LFW-style balanced pairs: each fold has ``per_fold`` same and ``per_fold`` different pairs,
    and the folds are identity-disjoint (each identity belongs to one fold)."""
    rng = np.random.default_rng(seed)
    identities = rng.permutation(np.unique(labels))
    fold_of = {int(ident): i % folds for i, ident in enumerate(identities)}
    rows_of: dict[int, np.ndarray] = {int(k): np.flatnonzero(labels == k) for k in identities}
    first, second, same, fold = [], [], [], []
    for f in range(folds):
        members = [k for k in rows_of if fold_of[k] == f]
        multi = [k for k in members if len(rows_of[k]) >= 2]
        if not multi or len(members) < 2:
            raise ValueError(f"fold {f} has too few identities to form pairs ({len(members)})")
        for is_same in (True, False):
            for _ in range(per_fold):
                if is_same:
                    k = multi[rng.integers(len(multi))]
                    a, b = rng.choice(rows_of[k], 2, replace=False)
                else:
                    k1, k2 = rng.choice(members, 2, replace=False)
                    a, b = rng.choice(rows_of[k1]), rng.choice(rows_of[k2])
                first.append(a)
                second.append(b)
                same.append(is_same)
                fold.append(f)
    return Pairs(np.array(first), np.array(second), np.array(same), np.array(fold))


def setting_embeddings(
    setting: str, pairs: Pairs, clean: np.ndarray, masked: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two embedding arrays ``[P, D]`` a setting compares."""
    if setting == "U-U":
        return clean[pairs.first], clean[pairs.second]
    if setting == "M-U":
        return clean[pairs.first], masked[pairs.second]
    if setting == "M-M":
        return masked[pairs.first], masked[pairs.second]
    raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")
