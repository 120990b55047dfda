"""Edges of the verification metrics that mutation testing found unchecked: the error messages,
the strict ``score > threshold`` rule on the test fold, FAR targets met exactly, the default
ten folds, the full ROC for TAR@FAR, and the accept-all threshold."""

import numpy as np
import pytest

from meer.eval.verification import (
    best_threshold,
    equal_error_rate,
    kfold_accuracy,
    pair_folds,
    tar_at_far,
    verify_pairs,
)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"need 2 <= folds <= number of pairs \(3\), got folds=4"):
        pair_folds(3, 4)
    with pytest.raises(ValueError, match=r"fold array must have shape \(3,\), got \(2,\)"):
        pair_folds(3, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"need at least 2 distinct folds, got \[5\]"):
        pair_folds(3, np.array([5, 5, 5]))
    emb = np.eye(2)
    with pytest.raises(ValueError, match="metric must be cosine or euclidean, got 'dot'"):
        verify_pairs(emb, emb, np.array([True, False]), folds=2, metric="dot")


def test_a_test_score_on_the_threshold_counts_as_different():
    # fold 1's threshold comes from fold 0: midway between 0.2 and 0.6, i.e. 0.4
    scores = np.array([0.6, 0.2, 0.4, 0.4])
    same = np.array([True, False, False, False])
    accuracies, thresholds = kfold_accuracy(scores, same, np.array([0, 0, 1, 1]))
    assert thresholds[1] == pytest.approx(0.4) and accuracies[1] == 1.0


def test_accept_all_threshold_sits_one_below_the_lowest_score():
    threshold, accuracy = best_threshold(np.array([0.3, 0.5]), np.array([True, True]))
    assert threshold == pytest.approx(-0.7) and accuracy == 1.0


def test_far_targets_met_exactly_are_measured():
    fpr, tpr = np.array([0.0, 0.01, 0.5, 1.0]), np.array([0.0, 0.6, 0.9, 1.0])
    assert tar_at_far(fpr, tpr, 0.01, num_negative=100) == 0.6  # 100 negatives measure FAR 1e-2
    assert np.isnan(tar_at_far(fpr, tpr, 0.01, num_negative=99))


def test_eer_when_the_curve_starts_at_the_crossing():
    assert equal_error_rate(np.array([0.25, 1.0]), np.array([0.75, 1.0])) == 0.25


def test_verify_pairs_defaults_to_ten_folds_and_accepts_one_positive():
    rng = np.random.default_rng(0)
    emb1, emb2 = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
    result = verify_pairs(emb1, emb2, np.arange(20) < 10)
    assert len(result.fold_accuracies) == 10
    one = verify_pairs(emb1, emb2, np.arange(20) < 1, folds=2)
    assert one.num_positive == 1


def test_tar_at_far_reads_every_roc_point():
    # scores with runs of ties: sklearn's default ROC drops the points inside a straight run
    same = np.array([True] * 6 + [False] * 100)
    scores = np.concatenate([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.linspace(0.85, -1.0, 100)])
    result = verify_pairs(np.stack([scores, np.sqrt(1 - scores**2)], 1), np.tile([1.0, 0.0], (106, 1)), same,
                          folds=2, fars=(0.01,))
    tpr_at_one_false = np.mean(scores[:6] > scores[6])  # the best threshold with one false accept
    assert result.tar_at_far[0.01] == pytest.approx(tpr_at_one_false)
    assert len(result.fpr) == len(np.unique(scores)) + 1


def test_paired_difference_reads_the_folds_together():
    from meer.eval.verification import paired_difference

    # A is exactly one point ahead in every fold: no spread, a certain lead, though each system's
    # own fold std (10 points) dwarfs the difference
    b = np.array([0.80, 0.90, 0.70, 1.00, 0.85])
    d = paired_difference(b + 0.01, b)
    assert d.mean == pytest.approx(1.0) and d.std == pytest.approx(0.0, abs=1e-9)
    assert (d.ahead, d.behind, d.folds, d.verdict) == (5, 0, 5, "ahead")
    # +2 and -1 points alternating: mean +0.5, std 1.5, t(0.975, 3) = 3.182 -> not separable
    d = paired_difference(b[:4] + np.array([0.02, -0.01, 0.02, -0.01]), b[:4])
    half = 3.182446 * np.std([2, -1, 2, -1], ddof=1) / 2
    assert (d.mean, d.std) == pytest.approx((0.5, 1.5))
    assert (d.low, d.high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)
    assert (d.ahead, d.behind, d.verdict) == (2, 2, "not separable")
    assert paired_difference(b, b + 0.02).verdict == "behind"
    assert str(paired_difference(b + 0.01, b)).startswith("+1.00 ± 0.00 points over 5 folds (95% interval +1.00 to +1.00")
    with pytest.raises(ValueError, match="two or more shared folds"):
        paired_difference([0.9], [0.8])


def test_the_demo_words_follow_the_paired_differences():
    from meer.demo import conclusion_text
    from meer.eval.verification import paired_difference

    level = paired_difference([0.90, 0.92, 0.91], [0.91, 0.91, 0.91])
    ahead = paired_difference([0.93, 0.95, 0.94], [0.91, 0.92, 0.92])
    text = conclusion_text({"U-U": level, "M-U": ahead, "M-M": level})
    assert "M-U: +2.33" in text and text.endswith("MEER is ahead in M-U.\nNot separable in U-U, M-M.")
    text = conclusion_text({"U-U": level, "M-U": level, "M-M": level})
    assert text.endswith("At this budget the two systems are not separable in any setting.")


def test_reject_all_threshold_sits_one_above_the_highest_score():
    from meer.eval.verification import best_threshold

    assert best_threshold(np.array([0.2, 0.5]), np.array([False, False])) == (1.5, 1.0)


def test_a_midpoint_that_rounds_onto_a_score_still_splits_it_by_the_rule():
    from meer.eval.verification import best_threshold

    # two scores one float apart: their midpoint rounds to the lower one, which must count as
    # "different" (same iff score > threshold), so this threshold separates them perfectly
    low = 0.5
    high = float(np.nextafter(low, 1.0))
    threshold, accuracy = best_threshold(np.array([low, high]), np.array([False, True]))
    assert (threshold, accuracy) == (low, 1.0)


def test_paired_difference_counts_folds_ahead_and_behind_by_any_margin():
    from meer.eval.verification import paired_difference

    b = np.array([0.5, 0.5, 0.5, 0.5])
    d = paired_difference(b + np.array([0.005, 0.0, -0.005, 0.02]), b)  # +0.5, 0, -0.5, +2 points
    assert (d.ahead, d.behind, d.folds) == (2, 1, 4)
    two = paired_difference([0.9, 0.8], [0.8, 0.75])  # two folds are enough
    assert two.folds == 2 and two.mean == pytest.approx(7.5)

