"""The procedural synthetic faces: determinism, shapes, alignment, and identity signal."""

import cv2
import numpy as np
import pytest

from meer.data.faceset import FaceSet, arcface_template
from meer.data.synthetic import SyntheticFaces


def test_same_seed_identity_sample_gives_identical_pixels():
    first, points = SyntheticFaces(10, 4, 48, seed=7).render(3, 2)
    again, points_again = SyntheticFaces(10, 4, 48, seed=7).render(3, 2)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(points, points_again)


def test_seed_identity_and_sample_all_change_the_face():
    faces = SyntheticFaces(10, 4, 48, seed=7)
    reference = faces.render(3, 2)[0].astype(int)
    for other in (faces.render(4, 2)[0], faces.render(3, 1)[0], SyntheticFaces(10, 4, 48, seed=8).render(3, 2)[0]):
        assert np.abs(other.astype(int) - reference).mean() > 5


def test_generate_returns_a_labelled_faceset():
    faces = SyntheticFaces(5, 3, 32, seed=1).generate()
    assert isinstance(faces, FaceSet)
    assert faces.images.shape == (15, 32, 32, 3) and faces.images.dtype == np.uint8
    assert faces.landmarks.shape == (15, 5, 2) and faces.landmarks.dtype == np.float32
    np.testing.assert_array_equal(faces.labels, np.repeat(np.arange(5), 3))
    assert faces.num_identities == 5 and len(faces.names) == 5


def test_parallel_generation_gives_the_same_faces_in_the_same_order(monkeypatch):
    monkeypatch.setattr("meer.data.synthetic.CHUNK", 7)  # 40 faces: 6 tasks, the last one short
    faces = SyntheticFaces(10, 4, 32, seed=5)
    serial = faces.generate(workers=0)
    cv2.GaussianBlur(np.zeros((2000, 2000), np.float32), (0, 0), 5)  # OpenCV's thread pool busy before the fork
    parallel = faces.generate(workers=2)
    np.testing.assert_array_equal(parallel.images, serial.images)
    np.testing.assert_array_equal(parallel.landmarks, serial.landmarks)
    np.testing.assert_array_equal(parallel.labels, serial.labels)
    assert np.abs(serial.images[7].astype(int) - serial.images[6].astype(int)).mean() > 5  # rows differ


@pytest.mark.parametrize("size", [32, 64, 112])
def test_landmarks_inside_the_image_and_near_the_template(size):
    faces = SyntheticFaces(6, 4, size, seed=2)
    template = arcface_template(size)
    for identity in range(6):
        for sample in range(4):
            image, points = faces.render(identity, sample)
            assert image.shape == (size, size, 3)
            assert np.all((points >= 0) & (points < size))
            # pose jitter moves points by a few pixels; a tenth of the crop is a generous bound
            assert np.abs(points - template).max() < 0.12 * size
            assert points[0, 0] < points[2, 0] < points[1, 0]  # left eye, nose, right eye
            assert points[:2, 1].max() < points[2, 1] < points[3:, 1].min()  # eyes, nose, mouth


def test_same_identity_is_closer_than_different_identities():
    faces = SyntheticFaces(12, 4, 32, seed=5).generate()
    # the face centre, normalised per image so lighting and contrast do not dominate
    x = faces.images[:, 6:26, 6:26].reshape(len(faces), -1).astype(np.float32)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    distance = np.abs(x[:, None] - x[None]).mean(-1)
    same = faces.labels[:, None] == faces.labels[None]
    different_image = ~np.eye(len(faces), dtype=bool)
    assert distance[same & different_image].mean() < 0.85 * distance[~same].mean()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="at least 1"):
        SyntheticFaces(0, 4)
    with pytest.raises(ValueError, match="size"):
        SyntheticFaces(2, 2, size=8)
    with pytest.raises(ValueError, match="out of range"):
        SyntheticFaces(2, 2).render(2, 0)
