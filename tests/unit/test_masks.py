"""Mask rendering: the occlusion rule the generator's composite relies on, coverage, types."""

import numpy as np
import pytest

from meer.data.faceset import arcface_template
from meer.data.masks import MASK_TYPES, MaskRenderer
from meer.data.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def faces():
    return {size: SyntheticFaces(4, 2, size, seed=11).generate() for size in (48, 64, 112)}


@pytest.mark.parametrize("size", [48, 64, 112])
@pytest.mark.parametrize("kind", MASK_TYPES[1:])
def test_occlusion_is_exactly_the_changed_pixels(faces, size, kind):
    renderer = MaskRenderer(types=(kind,))
    for i in range(len(faces[size])):
        image, points = faces[size].images[i], faces[size].landmarks[i]
        render = renderer(image, points, np.random.default_rng(i))
        assert render.masked.shape == image.shape and render.masked.dtype == np.uint8
        assert render.occlusion.shape == image.shape[:2] and render.occlusion.dtype == np.uint8
        assert set(np.unique(render.occlusion)) <= {0, 1}
        assert render.mask_type == MASK_TYPES.index(kind)
        outside = render.occlusion == 0
        # the rule: occlusion == 0 -> bit-identical pixel
        np.testing.assert_array_equal(render.masked[outside], image[outside])
        # and the map is not bloated: nearly every pixel it claims did change
        changed = np.any(render.masked != image, axis=-1)
        assert changed[~outside].mean() > 0.9
        assert 0.1 < render.occlusion.mean() < 0.7


def test_mask_covers_the_mouth_and_nose_but_not_the_eyes(faces):
    renderer = MaskRenderer(nose_out_prob=0.0, chin_out_prob=0.0)
    faceset = faces[112]
    for i in range(len(faceset)):
        render = renderer(faceset.images[i], faceset.landmarks[i], np.random.default_rng(100 + i))
        x, y = np.round(faceset.landmarks[i]).astype(int).T
        assert render.occlusion[y[2:], x[2:]].all(), "nose tip and mouth corners are covered"
        for ex, ey in zip(x[:2], y[:2]):
            assert not render.occlusion[ey - 4 : ey + 5, ex - 4 : ex + 5].any(), "the eyes stay visible"


def test_same_rng_seed_gives_the_same_mask(faces):
    image, points = faces[64].images[0], faces[64].landmarks[0]
    renderer = MaskRenderer()
    first = renderer(image, points, np.random.default_rng(5))
    again = renderer(image, points, np.random.default_rng(5))
    np.testing.assert_array_equal(first.masked, again.masked)
    np.testing.assert_array_equal(first.occlusion, again.occlusion)
    other = renderer(image, points, np.random.default_rng(6))
    assert not np.array_equal(first.masked, other.masked)


def test_all_types_are_drawn_by_default(faces):
    renderer = MaskRenderer()
    image, points = faces[48].images[0], faces[48].landmarks[0]
    drawn = {renderer(image, points, np.random.default_rng(k)).mask_type for k in range(40)}
    assert drawn == {1, 2, 3}


def test_roll_follows_the_eye_line():
    # A face tilted by 20 degrees: the mask's occlusion tilts with it, so the covered
    # height at the two mouth corners differs in the same direction as the eyes.
    size = 112
    template = arcface_template(size)
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (template - 56) @ rotation.T + 56
    image = np.full((size, size, 3), 128, np.uint8)
    occlusion = MaskRenderer(types=("surgical",), jitter=0.0, nose_out_prob=0, chin_out_prob=0)(
        image, points, np.random.default_rng(0)).occlusion
    top_left, top_right = (np.argmax(occlusion[:, c] > 0) for c in (30, 80))
    assert top_right > top_left + 5  # the right side of the face is lower in the image


def test_dense_landmarks_set_the_face_width():
    size = 112
    points = arcface_template(size)
    image = np.full((size, size, 3), 128, np.uint8)
    renderer = MaskRenderer(types=("surgical",), jitter=0.0, nose_out_prob=0, chin_out_prob=0)
    widths = []
    for half in (30, 45):
        dense = np.zeros((68, 2), np.float32)
        dense[1], dense[15], dense[8], dense[28] = (56 - half, 75), (56 + half, 75), (56, 110), (56, 62)
        occlusion = renderer(image, points, np.random.default_rng(0), dense_landmarks=dense).occlusion
        widths.append(int((occlusion[85] > 0).sum()))
    assert widths[1] > widths[0] + 15
    with pytest.raises(ValueError, match="dense_landmarks"):
        renderer(image, points, np.random.default_rng(0), dense_landmarks=np.zeros((10, 2)))


def test_a_mask_off_the_image_is_no_mask():
    image = np.zeros((64, 64, 3), np.uint8)
    far = arcface_template(64) + 1000
    render = MaskRenderer()(image, far, np.random.default_rng(0))
    assert render.mask_type == 0 and not render.occlusion.any()
    np.testing.assert_array_equal(render.masked, image)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mask types"):
        MaskRenderer(types=("bandana",))
    with pytest.raises(ValueError, match="weights"):
        MaskRenderer(types=("surgical", "n95"), weights=(1.0,))
    renderer = MaskRenderer()
    with pytest.raises(ValueError, match="uint8"):
        renderer(np.zeros((8, 8)), arcface_template(8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[5, 2\]"):
        renderer(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 2)), np.random.default_rng(0))
