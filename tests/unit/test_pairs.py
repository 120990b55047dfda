"""Synthetic verification pairs: balanced, identity-disjoint folds, the three settings."""

import numpy as np
import pytest

from meer.eval.pairs import make_pairs, setting_embeddings


def test_pairs_are_balanced_and_folds_identity_disjoint():
    labels = np.repeat(np.arange(40), 5)
    pairs = make_pairs(labels, folds=4, per_fold=30, seed=0)
    assert len(pairs) == 4 * 60 and pairs.same.sum() == 120
    assert np.array_equal(pairs.same, labels[pairs.first] == labels[pairs.second])
    assert (pairs.first != pairs.second).all()
    fold_ids = [set(labels[pairs.first[pairs.fold == f]]) | set(labels[pairs.second[pairs.fold == f]]) for f in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not fold_ids[a] & fold_ids[b]
    assert np.all(np.diff(pairs.fold) >= 0)


def test_settings_pick_masked_and_clean_embeddings():
    labels = np.repeat(np.arange(4), 3)
    pairs = make_pairs(labels, folds=2, per_fold=2, seed=1)
    clean, masked = np.arange(12)[:, None] * 1.0, -np.arange(12)[:, None] * 1.0
    a, b = setting_embeddings("M-U", pairs, clean, masked)
    assert np.array_equal(a, clean[pairs.first]) and np.array_equal(b, masked[pairs.second])
    a, b = setting_embeddings("M-M", pairs, clean, masked)
    assert np.array_equal(a, masked[pairs.first])
    with pytest.raises(ValueError, match="unknown setting"):
        setting_embeddings("X-Y", pairs, clean, masked)


def test_too_few_identities_is_an_error():
    with pytest.raises(ValueError, match="too few identities"):
        make_pairs(np.array([0, 0, 1]), folds=4, per_fold=1)
