"""Closed-set identification (docs/design.md, Protocols): masked probes against an unmasked gallery.

Every probe is ranked against the gallery *identities* by cosine similarity; rank-k accuracy
is the share of probes whose true identity is among the k best, and the CMC curve gives it
for every k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from meer.eval.verification import l2_normalise

Aggregate = Literal["max", "mean"]

# Probes are scored in blocks so the [Q, G] similarity matrix never has to fit in memory at once.
_PROBE_BLOCK = 1024


@dataclass
class IdentificationResult:
    """Rank-k accuracies (``rank_accuracy[k]`` in [0, 1]) and the CMC curve.

    ``cmc[k - 1]`` is the rank-k accuracy for ``k = 1 .. num_gallery_identities``.
    """

    rank_accuracy: dict[int, float]
    num_probes: int
    num_gallery_identities: int
    num_gallery_images: int
    aggregate: str
    cmc: np.ndarray = field(repr=False)  # float [num_gallery_identities]
    probe_ranks: np.ndarray = field(repr=False)  # int [num_probes]: each probe's rank, 1 = top

    def to_dict(self, cmc: bool = False) -> dict[str, Any]:
        """Plain Python types for JSON; the CMC curve only with ``cmc=True``."""
        out: dict[str, Any] = {
            "rank_accuracy": {str(k): float(v) for k, v in self.rank_accuracy.items()},
            "num_probes": self.num_probes,
            "num_gallery_identities": self.num_gallery_identities,
            "num_gallery_images": self.num_gallery_images,
            "aggregate": self.aggregate,
        }
        if cmc:
            out["cmc"] = self.cmc.tolist()
        return out


def identify(
    probe_emb: np.ndarray,
    probe_labels: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_labels: np.ndarray,
    ranks: Sequence[int] = (1, 5),
    aggregate: Aggregate = "max",
    metric: str = "cosine",
) -> IdentificationResult:
    """Rank-k identification accuracy of probes against a gallery.

    Args:
        probe_emb: probe embeddings ``[Q, D]`` (any norm; L2-normalised here).
        probe_labels: identity of each probe ``[Q]`` (ints or strings).
        gallery_emb: gallery embeddings ``[G, D]``; an identity may have several images.
        gallery_labels: identity of each gallery image ``[G]``.
        ranks: the k's to report; each must be at most the number of gallery identities.
        aggregate: how several gallery images of one identity give one score:
            ``"max"`` — the best cosine over its images (default);
            ``"mean"`` — cosine to the normalised mean of its normalised embeddings.
        metric: ``"cosine"`` or ``"euclidean"`` (minus the L2 distance of the raw embeddings,
            e.g. dlib's descriptors; with ``aggregate="max"`` only).

    A probe's rank is 1 + the number of *other* identities scoring at least as high as its
    own, so ties count against the probe (degenerate, all-equal embeddings get the worst
    rank, not the best). Closed set: a probe whose identity has no gallery image is a
    ``ValueError``.
    """
    if metric not in ("cosine", "euclidean") or (metric == "euclidean" and aggregate != "max"):
        raise ValueError(f"metric must be cosine, or euclidean with aggregate max; got {metric!r}, {aggregate!r}")
    if metric == "cosine":
        probe_emb, gallery_emb = l2_normalise(probe_emb), l2_normalise(gallery_emb)
    probe_emb, gallery_emb = np.asarray(probe_emb, np.float64), np.asarray(gallery_emb, np.float64)
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    if len(probe_emb) == 0 or len(gallery_emb) == 0:
        raise ValueError(f"need probes and a gallery; got {len(probe_emb)} probes, {len(gallery_emb)} gallery images")
    if probe_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"probe and gallery dimensions differ: {probe_emb.shape} vs {gallery_emb.shape}")
    if probe_labels.shape != (len(probe_emb),) or gallery_labels.shape != (len(gallery_emb),):
        raise ValueError("need one label per probe and one per gallery image")
    if aggregate not in ("max", "mean"):
        raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")

    identities, gallery_index = np.unique(gallery_labels, return_inverse=True)
    probe_index = np.searchsorted(identities, probe_labels).clip(max=len(identities) - 1)
    missing = identities[probe_index] != probe_labels
    if missing.any():
        absent = np.unique(probe_labels[missing])
        raise ValueError(
            f"{int(missing.sum())} probes belong to {len(absent)} identities absent from the gallery "
            f"(e.g. {absent[:5].tolist()}); closed-set identification needs every probe identity in it"
        )
    num_identities = len(identities)
    bad = [k for k in ranks if not 1 <= k <= num_identities]
    if bad:
        raise ValueError(f"ranks {bad} outside 1..{num_identities} (the number of gallery identities)")

    order = np.argsort(gallery_index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(gallery_index[order]) != 0])
    if aggregate == "mean":
        centres = np.add.reduceat(gallery_emb[order], starts, axis=0)
        centres = l2_normalise(centres)

    probe_ranks = np.empty(len(probe_emb), np.int64)
    for begin in range(0, len(probe_emb), _PROBE_BLOCK):
        block = slice(begin, begin + _PROBE_BLOCK)
        if aggregate == "max":
            if metric == "cosine":
                similarity = probe_emb[block] @ gallery_emb[order].T
            else:
                difference = probe_emb[block, None, :] - gallery_emb[order][None]
                similarity = -np.linalg.norm(difference, axis=2)
            scores = np.maximum.reduceat(similarity, starts, axis=1)
        else:
            scores = probe_emb[block] @ centres.T
        own = np.take_along_axis(scores, probe_index[block, None], axis=1)
        probe_ranks[block] = (scores >= own).sum(axis=1)  # counts the own identity too: rank >= 1

    cmc = np.cumsum(np.bincount(probe_ranks - 1, minlength=num_identities)) / len(probe_ranks)
    return IdentificationResult(
        rank_accuracy={int(k): float(cmc[k - 1]) for k in ranks},
        num_probes=len(probe_ranks),
        num_gallery_identities=num_identities,
        num_gallery_images=len(gallery_emb),
        aggregate=aggregate,
        cmc=cmc,
        probe_ranks=probe_ranks,
    )



def leave_one_out_rank1(embeddings: np.ndarray, labels: np.ndarray, probes: np.ndarray | None = None) -> float:
    """Rank-1 accuracy of each image against all the others (closed set, best cosine per identity).

    Every image whose identity has at least one other image is a probe; its own embedding is
    left out of the gallery. ``probes`` (``[N, D]``, one per image) replaces each image as the
    probe by another view of it (e.g. the same photo with a synthetic mask) while its own
    gallery entry is still left out. Ties count against the probe, as in :func:`identify`.
    """
    emb = l2_normalise(np.asarray(embeddings, np.float64))
    queries = emb if probes is None else l2_normalise(np.asarray(probes, np.float64))
    if queries.shape != emb.shape:
        raise ValueError(f"need one probe per image: {queries.shape} vs {emb.shape}")
    labels = np.asarray(labels)
    identities, index = np.unique(labels, return_inverse=True)
    rows = np.flatnonzero(np.bincount(index)[index] >= 2)
    if len(rows) == 0:
        raise ValueError("leave-one-out identification needs an identity with two images or more")
    similarity = queries[rows] @ emb.T
    similarity[np.arange(len(rows)), rows] = -np.inf  # the probe's own image is not in the gallery
    scores = np.full((len(rows), len(identities)), -np.inf)
    for k in range(len(identities)):
        scores[:, k] = similarity[:, index == k].max(axis=1)
    own = scores[np.arange(len(rows)), index[rows]]
    return float(((scores >= own[:, None]).sum(axis=1) == 1).mean())
