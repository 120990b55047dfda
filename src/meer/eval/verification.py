"""Face verification on pairs (docs/design.md, Protocols): k-fold accuracy, ROC, AUC, EER, TAR@FAR.

Used in the three masked settings (U-U, M-U, M-M). The score of a pair is the cosine
similarity of the two L2-normalised embeddings; a pair is declared "same" when its score is
above a threshold. Parsing pair files lives in ``meer.eval.pairs``; this module only scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_curve

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)


@dataclass
class VerificationResult:
    """Verification metrics of one set of pairs.

    ``fold_thresholds`` are cosine-similarity thresholds (same iff score > threshold), each
    chosen on the *other* folds. ``accuracy_std`` is the population standard deviation over
    folds (``ddof=0``, as in the LFW tooling of facenet / insightface). ``tar_at_far`` maps
    each FAR to a conservative TAR (see :func:`tar_at_far`); NaN where there are too few
    negative pairs to measure that FAR. ``fpr`` / ``tpr`` / ``thresholds`` are sklearn's ROC
    over all pairs (``thresholds[0]`` is ``inf``).
    """

    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: np.ndarray  # float [K]
    fold_thresholds: np.ndarray  # float [K]
    auc: float
    eer: float
    tar_at_far: dict[float, float]
    num_pairs: int
    num_positive: int
    num_negative: int
    fpr: np.ndarray = field(repr=False)  # float [T]
    tpr: np.ndarray = field(repr=False)  # float [T]
    thresholds: np.ndarray = field(repr=False)  # float [T], decreasing

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """Plain Python types for JSON. FAR keys become strings like ``"0.001"``; NaN stays NaN
        (``meer.eval.report.write_metrics_json`` writes it as ``null``). The ROC arrays, one
        entry per distinct score, are included only with ``curves=True``."""
        out: dict[str, Any] = {
            "accuracy_mean": float(self.accuracy_mean),
            "accuracy_std": float(self.accuracy_std),
            "fold_accuracies": self.fold_accuracies.tolist(),
            "fold_thresholds": self.fold_thresholds.tolist(),
            "auc": float(self.auc),
            "eer": float(self.eer),
            "tar_at_far": {str(far): float(tar) for far, tar in self.tar_at_far.items()},
            "num_pairs": self.num_pairs,
            "num_positive": self.num_positive,
            "num_negative": self.num_negative,
        }
        if curves:
            out["roc"] = {
                "fpr": self.fpr.tolist(),
                "tpr": self.tpr.tolist(),
                "thresholds": self.thresholds.tolist(),
            }
        return out


def pair_folds(num_pairs: int, folds: int | np.ndarray) -> np.ndarray:
    """Fold index ``int64 [P]`` of every pair, values ``0..K-1``.

    An int ``K`` splits the pairs into ``K`` contiguous folds of near-equal size, the first
    ``P % K`` folds one pair larger (like ``sklearn.model_selection.KFold(K, shuffle=False)``);
    this is the LFW convention, where ``pairs.txt`` lists the pairs fold by fold. An array
    gives each pair's fold explicitly (any labels, e.g. LFW folds 6..10); it is renumbered to
    ``0..K-1`` in sorted order.
    """
    if isinstance(folds, (int, np.integer)):
        if not 2 <= folds <= num_pairs:
            raise ValueError(f"need 2 <= folds <= number of pairs ({num_pairs}), got folds={folds}")
        index = np.empty(num_pairs, np.int64)
        for k, chunk in enumerate(np.array_split(np.arange(num_pairs), int(folds))):
            index[chunk] = k
        return index
    folds = np.asarray(folds)
    if folds.shape != (num_pairs,):
        raise ValueError(f"fold array must have shape ({num_pairs},), got {folds.shape}")
    labels, index = np.unique(folds, return_inverse=True)
    if len(labels) < 2:
        raise ValueError(f"need at least 2 distinct folds, got {labels.tolist()}")
    return index.astype(np.int64)


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows of ``[N, D]`` scaled to unit L2 norm (float64); zero rows stay zero."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {embeddings.shape}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def cosine_scores(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Cosine similarity ``float64 [P]`` of matching rows of ``emb1`` / ``emb2`` ``[P, D]``.

    Rows are L2-normalised first; an all-zero row scores 0 rather than NaN.
    """
    emb1 = l2_normalise(emb1)
    emb2 = l2_normalise(emb2)
    return np.einsum("pd,pd->p", emb1, emb2)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy of ``same iff score > threshold``, and that accuracy.

    Candidates are the midpoints between consecutive distinct scores (any threshold in such
    a gap gives the same accuracy here, and the midpoint leaves most room on unseen pairs),
    plus one below the lowest score (accept all) and one above the highest (reject all).
    Ties go to the lowest threshold. ``scores`` float ``[N]``, ``same`` bool ``[N]``.
    """
    distinct = np.unique(scores)
    candidates = np.concatenate(
        [[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1.0]]
    )
    positives = np.sort(scores[same])
    negatives = np.sort(scores[~same])
    # Counting with searchsorted makes this O(N log N) instead of O(N^2) over all candidates.
    true_accepts = len(positives) - np.searchsorted(positives, candidates, side="right")
    true_rejects = np.searchsorted(negatives, candidates, side="right")
    accuracy = (true_accepts + true_rejects) / len(scores)
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


def kfold_accuracy(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold accuracies and thresholds, each threshold chosen on the other folds.

    ``scores`` float ``[P]``, ``same`` bool ``[P]``, ``folds`` int ``[P]`` with values
    ``0..K-1``. Returns ``(accuracies [K], thresholds [K])``.
    """
    num_folds = int(folds.max()) + 1
    accuracies = np.zeros(num_folds)
    thresholds = np.zeros(num_folds)
    for k in range(num_folds):
        test = folds == k
        thresholds[k], _ = best_threshold(scores[~test], same[~test])
        accuracies[k] = np.mean((scores[test] > thresholds[k]) == same[test])
    return accuracies, thresholds


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where FAR equals FRR (``1 - tpr``), linearly interpolated on the ROC.

    ``fpr`` / ``tpr`` float ``[T]`` must be sklearn's ROC order (both non-decreasing).
    """
    gap = (1.0 - tpr) - fpr  # non-increasing along the curve; the EER is where it crosses 0
    i = int(np.argmax(gap <= 0))
    if i == 0:
        return float(fpr[0])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float, num_negative: int) -> float:
    """TAR at a target FAR, conservative: the best TPR among ROC points with FPR <= ``far``.

    No interpolation between ROC points: the figure is what a real threshold achieves on
    these pairs without exceeding the FAR. When there are fewer than ``1 / far`` negative
    pairs, a single false accept already exceeds the target, so the FAR cannot be measured
    and NaN is returned. ``fpr`` / ``tpr`` must include every threshold
    (``roc_curve(..., drop_intermediate=False)``), otherwise points on a sloped segment
    are missing and the figure comes out too low.
    """
    # A small tolerance because 1e-3 * 1000 etc. may round just below 1.
    if num_negative * far < 1.0 - 1e-9:
        return float("nan")
    return float(tpr[fpr <= far + 1e-12].max())


def verify_pairs(
    emb1: np.ndarray,
    emb2: np.ndarray,
    same: np.ndarray,
    folds: int | np.ndarray = 10,
    fars: Sequence[float] = DEFAULT_FARS,
    metric: str = "cosine",
) -> VerificationResult:
    """Verification metrics of pairs ``(emb1[i], emb2[i])``.

    Args:
        emb1, emb2: embeddings ``[P, D]`` of the first / second face of each pair (any
            norm; they are L2-normalised for ``metric="cosine"``).
        same: bool ``[P]``, True where both faces show the same person.
        folds: number of contiguous folds, or a fold label per pair ``[P]``
            (see :func:`pair_folds`).
        fars: false-accept rates at which to report TAR.
        metric: ``cosine`` (meer's) or ``euclidean``: minus the L2 distance of the raw
            embeddings, the native metric of descriptors such as dlib's. Thresholds are then
            negated distances.

    k-fold accuracy uses thresholds chosen on the other folds; ROC, AUC, EER and TAR@FAR
    are computed over all pairs at once.
    """
    emb1 = np.asarray(emb1)
    emb2 = np.asarray(emb2)
    same = np.asarray(same)
    if emb1.ndim != 2 or emb1.shape != emb2.shape:
        raise ValueError(f"emb1 and emb2 must both be [P, D]; got {emb1.shape} and {emb2.shape}")
    if same.shape != (len(emb1),) or same.dtype != bool:
        raise ValueError(f"same must be a bool array of shape ({len(emb1)},); got {same.dtype} {same.shape}")
    num_positive = int(same.sum())
    num_negative = len(same) - num_positive
    if num_positive == 0 or num_negative == 0:
        raise ValueError(
            f"need both same and different pairs; got {num_positive} same, {num_negative} different"
        )

    if metric == "cosine":
        scores = cosine_scores(emb1, emb2)
    elif metric == "euclidean":
        scores = -np.linalg.norm(emb1.astype(np.float64) - emb2.astype(np.float64), axis=1)
    else:
        raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
    accuracies, thresholds = kfold_accuracy(scores, same, pair_folds(len(same), folds))
    fpr, tpr, roc_thresholds = roc_curve(same, scores, drop_intermediate=False)
    return VerificationResult(
        accuracy_mean=float(accuracies.mean()),
        accuracy_std=float(accuracies.std()),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        auc=float(area_under_curve(fpr, tpr)),
        eer=equal_error_rate(fpr, tpr),
        tar_at_far={float(far): tar_at_far(fpr, tpr, far, num_negative) for far in fars},
        num_pairs=len(same),
        num_positive=num_positive,
        num_negative=num_negative,
        fpr=fpr,
        tpr=tpr,
        thresholds=roc_thresholds,
    )


@dataclass(frozen=True)
class PairedDifference:
    """System A minus system B on the same folds, in accuracy points.

    The folds hold the same pairs for both systems, so the per-fold difference removes the
    folds' own difficulty: its spread is far smaller than either system's fold std.
    ``low``/``high`` bound a 95% t-interval of the mean difference over the folds.
    """

    mean: float
    std: float  # population std over folds, as the accuracies'
    low: float
    high: float
    ahead: int  # folds where A is ahead
    behind: int
    folds: int

    @property
    def verdict(self) -> str:
        """``"ahead"`` / ``"behind"`` when the interval excludes 0, else ``"not separable"``."""
        return "ahead" if self.low > 0 else "behind" if self.high < 0 else "not separable"

    def __str__(self) -> str:
        return (f"{self.mean:+.2f} ± {self.std:.2f} points over {self.folds} folds (95% interval "
                f"{self.low:+.2f} to {self.high:+.2f}; ahead in {self.ahead}, behind in {self.behind})")


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedDifference:
    """Compare per-fold accuracies (fractions) of two systems on the same folds."""
    from scipy.stats import t

    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) * 100
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need the accuracies of two or more shared folds, got shape {d.shape}")
    half = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    mean = float(d.mean())
    return PairedDifference(mean, float(d.std()), mean - half, mean + half, int((d > 0).sum()),
                            int((d < 0).sum()), len(d))
