"""Verification results: every field of the JSON form by name and value, and small contracts."""

import numpy as np
import pytest

from meer.eval.verification import verify_pairs


def test_to_dict_names_every_field_with_its_value():
    rng = np.random.default_rng(3)
    emb1, emb2 = rng.standard_normal((40, 6)), rng.standard_normal((40, 6))
    emb2[:20] = emb1[:20] + 0.3 * rng.standard_normal((20, 6))
    same = np.arange(40) < 20
    result = verify_pairs(emb1, emb2, same, folds=4, fars=(0.1, 0.5))
    plain = result.to_dict()
    assert plain == {
        "accuracy_mean": pytest.approx(result.accuracy_mean),
        "accuracy_std": pytest.approx(result.accuracy_std),
        "fold_accuracies": pytest.approx(list(result.fold_accuracies)),
        "fold_thresholds": pytest.approx(list(result.fold_thresholds)),
        "auc": pytest.approx(result.auc),
        "eer": pytest.approx(result.eer),
        "tar_at_far": {"0.1": pytest.approx(result.tar_at_far[0.1]), "0.5": pytest.approx(result.tar_at_far[0.5])},
        "num_pairs": 40,
        "num_positive": 20,
        "num_negative": 20,
    }
    assert all(type(plain[k]) is float for k in ("accuracy_mean", "accuracy_std", "auc", "eer"))
    assert type(plain["fold_accuracies"]) is list and len(plain["fold_thresholds"]) == 4
    curves = result.to_dict(curves=True)["roc"]
    assert curves == {"fpr": list(result.fpr), "tpr": list(result.tpr), "thresholds": list(result.thresholds)}
    assert 0 < result.accuracy_std and 0.5 < result.auc <= 1


def test_l2_normalise_works_in_float64_and_names_a_bad_shape():
    from meer.eval.verification import l2_normalise

    rows = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
    unit = l2_normalise(rows)
    assert unit.dtype == np.float64
    np.testing.assert_array_equal(unit, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"embeddings must be \[N, D\], got shape \(3,\)"):
        l2_normalise(np.ones(3))
