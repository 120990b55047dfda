"""Rules that hold for every input, checked on many generated ones (Hypothesis): the composite
keeps visible pixels, alignment maps landmarks onto the template, k-fold thresholds never see
their own fold, the best threshold is the best, calibration files round-trip."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meer.calibration import Calibration, read_calibration, write_calibration
from meer.data.align import align_face, estimate_similarity, transform_points
from meer.data.faceset import face_template
from meer.eval.verification import best_threshold, kfold_accuracy, pair_folds
from meer.models.generator import composite
from meer.models.heads import CombinedMargin
from meer.models.layers import grad_reverse

# derandomize: the same examples on every run, so the suite (and mutation testing) is repeatable
FAST = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

pixels = st.floats(-1, 1, allow_nan=False, width=32)


@FAST
@given(st.data(), st.integers(1, 3), st.integers(1, 6))
def test_composite_keeps_every_visible_pixel(data, batch, side):
    shape = (batch, 3, side, side)
    image = torch.from_numpy(data.draw(arrays(np.float32, shape, elements=pixels)))
    restored = torch.from_numpy(data.draw(arrays(np.float32, shape, elements=pixels)))
    region = torch.from_numpy(data.draw(arrays(np.float32, (batch, 1, side, side), elements=st.sampled_from([0.0, 1.0]))))
    out = composite(restored, image, region)
    visible = (region == 0).expand_as(image)
    assert torch.equal(out[visible], image[visible])
    assert torch.equal(out[~visible], restored[~visible])


similarity = st.tuples(
    st.floats(0.2, 4.0),  # scale
    st.floats(-math.pi, math.pi),  # rotation
    st.floats(-300, 300), st.floats(-300, 300),  # translation
)


@FAST
@given(similarity, st.sampled_from(["arcface", "dlib"]), st.sampled_from([48, 112]))
def test_alignment_maps_the_landmarks_onto_the_template(transform, template, size):
    scale, angle, tx, ty = transform
    target = face_template(template, size).astype(np.float64)
    # landmarks of a face in a photo: the template moved by an arbitrary similarity
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = target @ rotation.T + [tx, ty]
    matrix = estimate_similarity(landmarks, target)
    np.testing.assert_allclose(transform_points(landmarks, matrix), target, atol=1e-3)
    assert np.linalg.det(matrix[:, :2]) > 0  # never a reflection
    image = np.zeros((64, 64, 3), np.uint8)
    _, _, in_crop = align_face(image, landmarks.astype(np.float32), size, template)
    np.testing.assert_allclose(in_crop, target, atol=2e-3 * size)


@FAST
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=3, max_size=8), similarity)
def test_similarity_fit_is_the_least_squares_one(points, transform):
    src = np.array(points)
    if src.var(0).sum() < 1e-2:
        return  # all points (nearly) at one place: no similarity is defined
    scale, angle, tx, ty = transform
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    noise = np.random.default_rng(len(points)).normal(0, 0.5, src.shape)
    dst = src @ rotation.T + [tx, ty] + noise
    matrix = estimate_similarity(src, dst)
    residual = np.square(transform_points(src, matrix) - dst).sum()
    true_residual = np.square(src @ rotation.T + [tx, ty] - dst).sum()
    assert residual <= true_residual * (1 + 1e-4) + 1e-3
    # a mirrored face is still fitted without a reflection
    mirrored = estimate_similarity(src, dst * [-1, 1])
    assert np.linalg.det(mirrored[:, :2]) > 0


scores_and_labels = st.integers(6, 40).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(-1, 1)),
        arrays(np.bool_, n),
        st.integers(2, min(5, n)),
    )
)


@FAST
@given(scores_and_labels, st.data())
def test_kfold_thresholds_never_see_their_own_fold(case, data):
    scores, same, num_folds = case
    folds = pair_folds(len(scores), num_folds)
    accuracies, thresholds = kfold_accuracy(scores, same, folds)
    k = data.draw(st.integers(0, num_folds - 1))
    test = folds == k
    # anything may happen to fold k's pairs: its threshold does not move
    other_scores, other_same = scores.copy(), same.copy()
    other_scores[test] = data.draw(arrays(np.float64, int(test.sum()), elements=st.floats(-1, 1)))
    other_same[test] = ~other_same[test]
    _, moved = kfold_accuracy(other_scores, other_same, folds)
    assert moved[k] == thresholds[k]
    assert thresholds[k] == best_threshold(scores[~test], same[~test])[0]
    assert accuracies[k] == np.mean((scores[test] > thresholds[k]) == same[test])


@FAST
@given(scores_and_labels)
def test_best_threshold_beats_every_other_threshold(case):
    scores, same, _ = case
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == np.mean((scores > threshold) == same)
    candidates = np.concatenate([scores, scores - 1e-9, scores + 1e-9, [-2.0, 2.0]])
    best_other = max(np.mean((scores > t) == same) for t in candidates)
    assert accuracy == best_other
    # ties go to the lowest threshold: every threshold below the chosen gap does worse
    below = scores[scores < threshold]
    if below.size:
        assert all(np.mean((scores > t) == same) < accuracy for t in candidates if t < below.max())


@FAST
@given(st.integers(2, 60), st.data())
def test_pair_folds_are_contiguous_and_balanced(num_pairs, data):
    k = data.draw(st.integers(2, num_pairs))
    folds = pair_folds(num_pairs, k)
    assert np.all(np.diff(folds) >= 0) and folds[0] == 0 and folds[-1] == k - 1
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1 and list(sizes) == sorted(sizes, reverse=True)
    labels = data.draw(arrays(np.int64, num_pairs, elements=st.sampled_from([6, 7, 9])))
    if len(np.unique(labels)) >= 2:
        renumbered = pair_folds(num_pairs, labels)
        assert np.array_equal(np.unique(labels)[renumbered], labels)


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@FAST
@given(
    st.floats(-1, 1, allow_nan=False),
    text,
    st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
    st.one_of(st.none(), st.sampled_from(["U-U", "M-U", "M-M"])),
)
def test_calibration_files_round_trip(tmp_path_factory, threshold, protocol, accuracy, setting):
    folder = tmp_path_factory.mktemp("calibration")
    original = Calibration(threshold, protocol, accuracy, setting)
    write_calibration(folder, original)
    assert read_calibration(folder) == original


def test_damaged_calibration_is_reported(tmp_path):
    assert read_calibration(tmp_path) is None
    (tmp_path / "calibration.json").write_text('{"threshold": 0.3')
    with pytest.raises(ValueError, match="damaged"):
        read_calibration(tmp_path)
    (tmp_path / "calibration.json").write_text('{"threshold": 0.3, "colour": "red"}')
    with pytest.raises(ValueError, match="damaged"):
        read_calibration(tmp_path)


@FAST
@given(st.floats(0.0, 3.0), arrays(np.float32, (3, 4), elements=st.floats(-10, 10, width=32)))
def test_gradient_reversal_scales_and_flips_any_gradient(strength, upstream):
    x = torch.zeros(3, 4, requires_grad=True)
    out = grad_reverse(x, strength)
    assert torch.equal(out, x)
    (out * torch.from_numpy(upstream)).sum().backward()
    torch.testing.assert_close(x.grad, -strength * torch.from_numpy(upstream))


@FAST
@given(st.floats(-0.999, 0.999), st.floats(0.01, 0.8), st.floats(1.0, 64.0))
def test_arcface_never_rewards_the_target(cosine, m2, scale):
    cos = torch.tensor([[cosine, 0.0]])
    logits = CombinedMargin(scale, 1.0, m2, 0.0)(cos, torch.tensor([0]))
    assert logits[0, 0] < scale * cosine
    assert logits[0, 1] == 0.0
