"""Rank-k identification on hand-built embeddings with known ranks."""

from __future__ import annotations

import numpy as np
import pytest

from meer.eval.identification import identify

EYE = np.eye(8)


def six_identity_gallery():
    """Gallery of identities 0..5, one image each along its own axis."""
    return EYE[:6], np.arange(6)


def test_rank1_and_rank5_on_known_ranks():
    gallery, labels = six_identity_gallery()
    probes = np.stack([
        EYE[0],  # identity 0 at rank 1
        0.9 * EYE[2] + 0.8 * EYE[3] + 0.7 * EYE[4] + 0.6 * EYE[5] + 0.5 * EYE[1],  # identity 1 at rank 5
        0.9 * EYE[0] + 0.8 * EYE[1] + 0.7 * EYE[3] + 0.6 * EYE[4] + 0.5 * EYE[5] + 0.4 * EYE[2],  # 2 at rank 6
    ])
    result = identify(probes, np.array([0, 1, 2]), gallery, labels)
    assert result.rank_accuracy == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3)}
    np.testing.assert_allclose(result.cmc, [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(result.probe_ranks, [1, 5, 6])
    assert (result.num_probes, result.num_gallery_identities, result.num_gallery_images) == (3, 6, 6)


def test_aggregate_max_versus_mean_embedding():
    # Identity "a" has one image equal to the probe and one orthogonal to it; identity "b"
    # has one image at cosine 0.9. Best image: "a" wins. Mean embedding (cosine 0.707): "b" wins.
    gallery = np.stack([EYE[0], EYE[1], 0.9 * EYE[0] + np.sqrt(1 - 0.81) * EYE[2]])
    labels = np.array(["a", "a", "b"])
    probe, probe_label = EYE[:1], np.array(["a"])
    assert identify(probe, probe_label, gallery, labels, ranks=(1,)).rank_accuracy[1] == 1.0
    by_mean = identify(probe, probe_label, gallery, labels, ranks=(1, 2), aggregate="mean")
    assert by_mean.rank_accuracy == {1: 0.0, 2: 1.0}
    assert by_mean.num_gallery_identities == 2 and by_mean.num_gallery_images == 3


def test_ties_count_against_the_probe():
    result = identify(np.zeros((2, 4)), np.array([0, 1]), np.zeros((3, 4)), np.array([0, 1, 2]), ranks=(1, 3))
    assert result.rank_accuracy == {1: 0.0, 3: 1.0}


def test_probe_identity_missing_from_gallery_is_an_error():
    gallery, labels = six_identity_gallery()
    with pytest.raises(ValueError, match="absent from the gallery"):
        identify(EYE[:2], np.array([0, 7]), gallery, labels)


def test_rank_beyond_gallery_size_is_an_error():
    with pytest.raises(ValueError, match="ranks"):
        identify(EYE[:1], np.array([0]), EYE[:3], np.arange(3), ranks=(1, 5))


def test_blocks_of_probes_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    gallery, labels = rng.standard_normal((40, 16)), np.repeat(np.arange(20), 2)
    probes, probe_labels = gallery[::2] + 0.8 * rng.standard_normal((20, 16)), np.arange(20)
    whole = identify(probes, probe_labels, gallery, labels)
    monkeypatch.setattr("meer.eval.identification._PROBE_BLOCK", 3)
    blocked = identify(probes, probe_labels, gallery, labels)
    np.testing.assert_array_equal(whole.cmc, blocked.cmc)
    assert 0 < whole.rank_accuracy[1] < 1
    assert whole.to_dict()["rank_accuracy"] == {"1": whole.rank_accuracy[1], "5": whole.rank_accuracy[5]}


def test_euclidean_metric_ranks_by_raw_distance_not_angle():
    probe = np.array([[1.0, 0.0]])
    gallery = np.array([[10.0, 0.0], [0.9, 0.1]])  # A: same direction, far; B: near, slightly turned
    labels = np.array(["A", "B"])
    assert identify(probe, np.array(["A"]), gallery, labels, ranks=(1,)).rank_accuracy[1] == 1.0
    assert identify(probe, np.array(["B"]), gallery, labels, ranks=(1,), metric="euclidean").rank_accuracy[1] == 1.0
    with pytest.raises(ValueError, match="euclidean with aggregate max"):
        identify(probe, np.array(["A"]), gallery, labels, ranks=(1,), aggregate="mean", metric="euclidean")


def test_leave_one_out_rank1_leaves_the_probe_itself_out():
    from meer.eval.identification import leave_one_out_rank1

    # a and a' are one person, b and b' another; c has a single image (never a probe)
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8], [0.75, 0.66]])
    labels = np.array(["a", "a", "b", "b", "c"])
    # each probe's best match would be itself if it stayed in the gallery (rank-1 = 1.0)
    # b' = (0.6, 0.8) is nearer c (0.75, 0.66) than b (0, 1): one miss of four
    assert leave_one_out_rank1(emb, labels) == 0.75
    # another view of each image as the probe (its own image still left out): every view here
    # looks like the other person, so every probe misses
    assert leave_one_out_rank1(emb, labels, probes=emb[[2, 2, 0, 0, 4]]) == 0.0
    with pytest.raises(ValueError, match="two images"):
        leave_one_out_rank1(emb[:1], labels[:1])
