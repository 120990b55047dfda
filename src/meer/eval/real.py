"""Protocols on real photos, resolved against an aligned cache written by ``meer prepare``.

* LFW-style verification pairs (optionally a subset of folds, e.g. View-2 folds 6-10, the
  test folds of the small-scale benchmark);
* masked probes against an unmasked gallery (``<person>/masked_*`` + ``unmasked_*``, RMFRD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from meer.data.cache import FaceCache
from meer.data.faceset import FaceSet
from meer.data.protocols import MaskedProtocol, PairList
from meer.eval.identification import IdentificationResult, identify, leave_one_out_rank1
from meer.eval.pairs import Pairs
from meer.inference.batched import embed_images
from meer.models.meer import MEER


def resolve_pairs(cache: FaceCache, pairs: PairList, folds: Sequence[int] | None = None) -> tuple[FaceSet, Pairs]:
    """The faces a pair list uses (once each) and the pairs as rows of that subset.

    ``folds`` keeps only those folds (0-based) and renumbers them 0..K-1. Every image must be
    in the cache: a missing one is an error naming it, since dropping pairs silently would
    change the protocol.
    """
    keep, used, inverse = _pair_rows(cache, pairs, folds)
    n = int(keep.sum())
    _, fold = np.unique(pairs.fold[keep], return_inverse=True)
    subset = FaceSet(np.asarray(cache.faces.images[used]), cache.faces.landmarks[used], cache.faces.labels[used],
                     cache.faces.names)
    return subset, Pairs(inverse[:n], inverse[n:], pairs.same[keep], fold.astype(np.int64))


def verification_bin_pairs(cache: FaceCache, folds: int = 10) -> tuple[FaceSet, Pairs]:
    """The pairs of a prepared InsightFace verification ``.bin`` (``lfw.bin``, ``cfp_fp.bin``,
    ``agedb_30.bin`` ...): pair ``p`` is its images ``2p`` and ``2p + 1``, split into ``folds``
    contiguous folds as InsightFace's own evaluation splits them."""
    if cache.issame is None:
        raise ValueError(f"{cache.path} was not prepared from a verification .bin (it has no issame.npy)")
    keys = sorted(cache.index, key=lambda k: int(k.rpartition(":")[2]))
    rows = cache.rows(keys)
    if len(rows) != 2 * len(cache.issame):
        raise ValueError(f"{cache.path} holds {len(rows)} of the .bin's {2 * len(cache.issame)} images; "
                         "every pair needs both (prepare it again)")
    pairs = len(cache.issame)
    fold = np.arange(pairs) * folds // pairs
    return cache.faces, Pairs(rows[0::2], rows[1::2], np.asarray(cache.issame, bool), fold.astype(np.int64))


def pair_rows(cache: FaceCache, pairs: PairList, folds: Sequence[int] | None = None) -> np.ndarray:
    """The cache rows of the faces :func:`resolve_pairs` returns, in its order."""
    return _pair_rows(cache, pairs, folds)[1]


def _pair_rows(cache: FaceCache, pairs: PairList, folds: Sequence[int] | None):
    keep = np.ones(len(pairs), bool) if folds is None else np.isin(pairs.fold, list(folds))
    if not keep.any():
        raise ValueError(f"no pairs in folds {[f + 1 for f in folds or []]} (numbered from 1)")
    first = [k for k, m in zip(pairs.first, keep) if m]
    second = [k for k, m in zip(pairs.second, keep) if m]
    rows_first, rows_second = cache.rows(first), cache.rows(second)
    missing = sorted({k for k, r in zip(first + second, np.concatenate([rows_first, rows_second])) if r < 0})
    if missing:
        raise ValueError(f"{len(missing)} pair images are not in the cache {cache.path}, e.g. {missing[0]}")
    used, inverse = np.unique(np.concatenate([rows_first, rows_second]), return_inverse=True)
    return keep, used, inverse


@dataclass
class IdentificationCounts:
    """What went into a masked identification: probes and gallery images used and left out,
    those aligned by the frame fallback, and ``unmasked_loo_rank1``, the rank-1 accuracy of
    each unmasked gallery image against the other unmasked ones (what masked training must not
    cost on clean faces). None: not measured by this protocol (left out of the JSON)."""

    probes: int
    gallery: int
    probes_dropped: int | None = None
    gallery_dropped: int | None = None
    fallback_aligned: int | None = None
    unmasked_loo_rank1: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class MaskedIdentification:
    """Masked probes against an unmasked gallery: the ranks and what went into them."""

    result: IdentificationResult
    counts: IdentificationCounts

    def to_dict(self) -> dict[str, Any]:
        """The result's JSON with the counts under ``"counts"``."""
        return {**self.result.to_dict(), "counts": self.counts.to_dict()}


def masked_identification(
    model: MEER, cache: FaceCache, protocol: MaskedProtocol, flip: bool = False, batch_size: int = 256,
    progress: bool = False,
) -> MaskedIdentification:
    """Rank-1 / rank-5 of masked probes against the unmasked gallery.

    Probes or gallery images that ``meer prepare`` could not align are left out and counted
    (see :class:`IdentificationCounts`).
    """
    size = model.input_size
    probe_rows, gallery_rows = cache.rows(protocol.probes), cache.rows(protocol.gallery)
    probe_ok, gallery_ok = probe_rows >= 0, gallery_rows >= 0
    gallery_labels = protocol.gallery_labels[gallery_ok]
    probe_ok &= np.isin(protocol.probe_labels, gallery_labels)
    people = len(np.unique(gallery_labels))
    if people < 5:
        raise ValueError(f"the masked protocol's gallery holds {people} people; rank-5 identification needs 5 or more")
    gallery = embed_images(model, cache.faces.subset(gallery_rows[gallery_ok]).resized(size).images, batch_size,
                           flip, progress, "embed gallery")
    probes = embed_images(model, cache.faces.subset(probe_rows[probe_ok]).resized(size).images, batch_size,
                          flip, progress, "embed probes")
    result = identify(probes, protocol.probe_labels[probe_ok], gallery, gallery_labels, ranks=(1, 5))
    counts = IdentificationCounts(
        probes=int(probe_ok.sum()), gallery=int(gallery_ok.sum()),
        probes_dropped=int((~probe_ok).sum()), gallery_dropped=int((~gallery_ok).sum()),
        fallback_aligned=int(cache.fallback[np.concatenate([probe_rows[probe_ok], gallery_rows[gallery_ok]])].sum()),
        unmasked_loo_rank1=leave_one_out_rank1(gallery, gallery_labels),
    )
    return MaskedIdentification(result, counts)
