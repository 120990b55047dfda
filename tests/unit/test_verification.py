"""Verification metrics on hand-built pairs with known answers, and a cross-check against the
classic LFW evaluation of facenet / insightface."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.model_selection import KFold

from meer.eval.verification import pair_folds, verify_pairs


def pairs_with_scores(scores) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[P, 2]`` whose pairs have exactly the given cosine similarities."""
    scores = np.asarray(scores, dtype=np.float64)
    first = np.tile([1.0, 0.0], (len(scores), 1))
    second = np.stack([scores, np.sqrt(1.0 - scores**2)], axis=1)
    return first, second


def scored(positive, negative, folds=2):
    scores = np.concatenate([positive, negative])
    same = np.r_[np.ones(len(positive), bool), np.zeros(len(negative), bool)]
    return verify_pairs(*pairs_with_scores(scores), same, folds)


def interleaved(positive, negative, folds):
    """Alternate same / different pairs so every contiguous fold of an even size is balanced."""
    scores = np.ravel(np.column_stack([positive, negative]))
    same = np.tile([True, False], len(positive))
    return verify_pairs(*pairs_with_scores(scores), same, folds)


def test_perfectly_separable():
    rng = np.random.default_rng(0)
    result = interleaved(rng.uniform(0.6, 0.9, 100), rng.uniform(-0.2, 0.3, 100), folds=10)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    assert result.auc == 1.0
    assert result.eer == 0.0
    assert result.tar_at_far[1e-2] == 1.0


def test_inverted_scores():
    rng = np.random.default_rng(0)
    result = interleaved(rng.uniform(-0.2, 0.3, 50), rng.uniform(0.6, 0.9, 50), folds=10)
    # No threshold of "same iff score > t" beats accepting (or rejecting) everything.
    assert result.accuracy_mean == 0.5
    assert result.auc == 0.0
    assert result.eer == 1.0


def test_all_scores_tied():
    result = interleaved(np.full(20, 0.5), np.full(20, 0.5), folds=4)
    assert result.accuracy_mean == 0.5
    assert result.auc == 0.5
    assert result.eer == pytest.approx(0.5)


def test_auc_and_eer_of_small_hand_case():
    result = scored([0.9, 0.6, 0.4], [0.7, 0.3, 0.1], folds=3)
    assert result.auc == pytest.approx(7 / 9)  # 7 of the 9 (same, different) pairs ordered right
    assert result.eer == pytest.approx(1 / 3)  # at threshold 0.6: FAR = FRR = 1/3


def test_threshold_is_chosen_on_the_other_folds():
    # Fold 0 separates at 0.5; fold 1 separates at 0.375, which fold 0's threshold misses.
    scores = [0.8, 0.9, 0.1, 0.2, 0.4, 0.45, 0.3, 0.35]
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    result = verify_pairs(*pairs_with_scores(scores), same, folds=2)
    np.testing.assert_allclose(result.fold_thresholds, [0.375, 0.5])
    np.testing.assert_allclose(result.fold_accuracies, [1.0, 0.5])
    assert result.accuracy_mean == pytest.approx(0.75)
    assert result.accuracy_std == pytest.approx(0.25)


def test_tar_at_far_is_conservative_and_unmeasurable_with_few_negatives():
    negatives = np.r_[0.9, 0.8, 0.7, np.linspace(0.0, 0.5, 197)]  # 200 different pairs
    positives = [0.95, 0.85, 0.85, 0.8, 0.75, 0.75, 0.75, 0.65, 0.6, 0.2, 0.1]
    scores = np.r_[positives, negatives]
    same = np.r_[np.ones(11, bool), np.zeros(200, bool)]
    result = verify_pairs(*pairs_with_scores(scores), same, folds=2, fars=(1e-2, 7.5e-3, 1e-3))
    # FAR 1e-2 allows 2 false accepts (0.9, 0.8): threshold 0.75 accepts 7 of 11 same pairs.
    assert result.tar_at_far[1e-2] == pytest.approx(7 / 11)
    # FAR 7.5e-3 allows 1 false accept: threshold 0.85 accepts 3. Threshold 0.8 would add a
    # false accept tied with a true one; interpolating on that segment would claim 3.5 / 11.
    assert result.tar_at_far[7.5e-3] == pytest.approx(3 / 11)
    # 200 negatives cannot measure FAR 1e-3 (one false accept is already 5e-3).
    assert math.isnan(result.tar_at_far[1e-3])


def test_pair_folds():
    np.testing.assert_array_equal(pair_folds(7, 3), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(pair_folds(4, np.array([6, 6, 9, 7])), [0, 0, 2, 1])
    for folds in (1, 8):
        with pytest.raises(ValueError):
            pair_folds(7, folds)
    with pytest.raises(ValueError):
        pair_folds(3, np.array([6, 6, 6]))


def test_explicit_folds_equal_contiguous_folds():
    rng = np.random.default_rng(1)
    emb1, emb2 = rng.standard_normal((2, 60, 8))
    same = rng.random(60) < 0.5
    by_count = verify_pairs(emb1, emb2, same, folds=3)
    by_label = verify_pairs(emb1, emb2, same, folds=np.repeat([6, 7, 8], 20))
    np.testing.assert_array_equal(by_count.fold_accuracies, by_label.fold_accuracies)


def test_rejects_bad_input():
    emb = np.ones((4, 3))
    with pytest.raises(ValueError, match="both same and different"):
        verify_pairs(emb, emb, np.ones(4, bool), folds=2)
    with pytest.raises(ValueError, match="bool"):
        verify_pairs(emb, emb, np.array([1, 0, 1, 0]), folds=2)
    with pytest.raises(ValueError, match=r"\[P, D\]"):
        verify_pairs(emb, emb[:3], np.array([1, 0, 1, 0], bool), folds=2)


def test_to_dict_is_json_ready():
    result = scored([0.9, 0.6, 0.4], [0.7, 0.3, 0.1], folds=3)
    plain = result.to_dict()
    assert "roc" not in plain and set(plain["tar_at_far"]) == {"0.01", "0.001", "0.0001"}
    json.dumps(result.to_dict(curves=True))


def classic_lfw_accuracy(emb1: np.ndarray, emb2: np.ndarray, same: np.ndarray, folds: int = 10) -> np.ndarray:
    """Per-fold accuracy as computed by facenet's / insightface's ``verification.py``.

    Squared L2 distance of normalised embeddings, thresholds ``np.arange(0, 4, 0.01)``,
    ``KFold`` without shuffling, best threshold on the train folds, accuracy on the test fold.
    """
    emb1 = emb1 / np.linalg.norm(emb1, axis=1, keepdims=True)
    emb2 = emb2 / np.linalg.norm(emb2, axis=1, keepdims=True)
    dist = np.sum(np.square(emb1 - emb2), axis=1)
    thresholds = np.arange(0, 4, 0.01)

    def accuracy(threshold, d, is_same):
        predict_same = np.less(d, threshold)
        tp = np.sum(predict_same & is_same)
        tn = np.sum(~predict_same & ~is_same)
        return (tp + tn) / d.size

    accuracies = np.zeros(folds)
    for k, (train, test) in enumerate(KFold(n_splits=folds, shuffle=False).split(np.arange(len(same)))):
        train_acc = [accuracy(t, dist[train], same[train]) for t in thresholds]
        accuracies[k] = accuracy(thresholds[int(np.argmax(train_acc))], dist[test], same[test])
    return accuracies


def clustered_pairs(num_pairs: int = 6000, dim: int = 32, noise: float = 0.22, seed: int = 0):
    """LFW-like pairs: 10 folds of 300 same + 300 different pairs of noisy identity centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    same = np.tile(np.repeat([True, False], num_pairs // 20), 10)
    first = rng.integers(1000, size=num_pairs)
    second = np.where(same, first, (first + rng.integers(1, 1000, size=num_pairs)) % 1000)
    emb1 = centres[first] + noise * rng.standard_normal((num_pairs, dim))
    emb2 = centres[second] + noise * rng.standard_normal((num_pairs, dim))
    return emb1, emb2, same


def test_kfold_accuracy_matches_classic_lfw_evaluation():
    emb1, emb2, same = clustered_pairs()
    ours = verify_pairs(emb1, emb2, same, folds=10)
    classic = classic_lfw_accuracy(emb1, emb2, same, folds=10)
    assert 0.85 < classic.mean() < 0.95  # a regime where the threshold matters
    # Squared L2 on unit vectors is 2 - 2 cos: same ordering, only the threshold grids differ.
    assert abs(ours.accuracy_mean - classic.mean()) < 1e-3


def test_euclidean_metric_uses_raw_distances():
    from meer.eval.verification import kfold_accuracy, pair_folds, verify_pairs

    rng = np.random.default_rng(1)
    emb1 = rng.normal(size=(200, 8)) * rng.uniform(0.5, 2.0, (200, 1))
    same = np.arange(200) % 2 == 0
    emb2 = np.where(same[:, None], emb1 + 0.3 * rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    result = verify_pairs(emb1, emb2, same, folds=5, metric="euclidean")
    expected, _ = kfold_accuracy(-np.linalg.norm(emb1 - emb2, axis=1), same, pair_folds(200, 5))
    np.testing.assert_allclose(result.fold_accuracies, expected)
    assert np.all(result.fold_thresholds <= 0)  # thresholds are negated distances
