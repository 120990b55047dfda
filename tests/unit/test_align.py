import cv2
import numpy as np
import pytest

from meer.data.align import (
    LANDMARKS_IN_BOX,
    align_face,
    estimate_similarity,
    frame_crop,
    inpaint,
    mask_beyond_crop,
    paste_back,
    transform_points,
)
from meer.data.faceset import arcface_template


def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0.3, 1.7, 12.0, -5.0), (-1.2, 0.4, 80.0, 3.5), (0.0, 1.0, 0.0, 0.0)])
def test_known_similarity_is_recovered(angle, scale, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    true = similarity(angle, scale, tx, ty)
    estimated = estimate_similarity(src, transform_points(src, true))
    np.testing.assert_allclose(estimated, true, atol=1e-3)


def test_least_squares_with_noise_and_no_reflection():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    mirrored = src * [-1, 1]  # only a reflection maps src onto this exactly
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    noisy = transform_points(src, similarity(0.2, 1.1, 3, 4)) + rng.normal(0, 0.01, (5, 2))
    np.testing.assert_allclose(estimate_similarity(src, noisy), similarity(0.2, 1.1, 3, 4), atol=0.01)


def test_degenerate_points_are_an_error():
    with pytest.raises(ValueError, match="one place"):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))


@pytest.mark.parametrize("size", [112, 64])
def test_align_face_puts_landmarks_on_the_template(size):
    # a photo whose face is the template rotated by 25 degrees, scaled x2 and shifted
    to_photo = similarity(np.deg2rad(25), 2.0, 60, 20)
    photo_points = transform_points(arcface_template(112), to_photo)
    image = np.random.default_rng(0).integers(0, 255, (300, 320, 3), dtype=np.uint8)
    aligned, matrix, landmarks = align_face(image, photo_points, size)
    assert aligned.shape == (size, size, 3) and aligned.dtype == np.uint8
    assert matrix.shape == (2, 3)
    np.testing.assert_allclose(landmarks, arcface_template(size), atol=1e-3)
    # eyes level after alignment
    assert abs(landmarks[0, 1] - landmarks[1, 1]) < 0.5


def test_frame_crop_aligns_the_frame_as_a_face_box():
    # a wide tight crop: the face box is the central 100x100 square; where the mean layout
    # puts the eyes and mouth corners, paint dots that must land on the template's points
    image = np.zeros((100, 160, 3), np.uint8)
    nominal = LANDMARKS_IN_BOX * 100 + [30, 0]
    for x, y in nominal:
        cv2.circle(image, (round(x), round(y)), 2, (255, 255, 255), -1)
    crop, matrix, landmarks = frame_crop(image, 112)
    assert crop.shape == (112, 112, 3)
    np.testing.assert_allclose(landmarks, transform_points(nominal, matrix), atol=1e-3)
    # the layout is a near-similarity of the template: every point within 4 px of its place
    assert np.abs(landmarks - arcface_template(112)).max() < 4.0
    for x, y in landmarks[[0, 1, 3, 4]]:
        assert crop[round(y), round(x)].min() > 100
    # the box fills most of the crop's width, as a detected face does (not the whole crop)
    box_width = np.ptp(transform_points([[30, 0], [130, 0]], matrix)[:, 0])
    assert 0.6 * 112 < box_width < 0.95 * 112
    assert frame_crop(image, 150, "dlib")[2].shape == (5, 2)


def test_dlib_template_frames_the_face_closer_and_lower_than_arcface():
    from meer.data.faceset import face_template

    arc, dlib = face_template("arcface", 150), face_template("dlib", 150)
    # dlib's chip is a closer view (eyes farther apart) centred lower (eyes higher, chin inside)
    assert np.ptp(dlib[:2, 0]) > np.ptp(arc[:2, 0])
    assert dlib[:2, 1].mean() < arc[:2, 1].mean() and dlib[3:, 1].mean() < arc[3:, 1].mean()
    # and it is (nearly) a similarity of ArcFace's: the same face shape, framed differently
    residual = np.abs(transform_points(arc, estimate_similarity(arc, dlib)) - dlib).max()
    assert residual < 3.0
    with pytest.raises(ValueError, match="unknown template"):
        face_template("vgg", 112)


def test_paste_back_puts_the_crops_pixels_where_they_came_from():
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    matrix = similarity(0.2, 0.5, -20.0, -10.0)  # a face twice the crop's size, turned a little
    crop = np.full((56, 56, 3), 77, np.float32)
    weight = np.zeros((56, 56), np.float32)
    # nothing to put back
    np.testing.assert_array_equal(paste_back(photo, weight[..., None] * crop, weight, matrix), photo)
    weight[20:40, 10:30] = 1.0
    pasted = paste_back(photo, weight[..., None] * crop, weight, matrix)
    changed = (pasted != photo).any(axis=2)
    inside = np.round(transform_points([[20.0, 30.0]], cv2.invertAffineTransform(matrix))[0]).astype(int)
    assert (pasted[inside[1], inside[0]] == 77).all()  # the middle of the box comes back as the crop's colour
    box = np.round(transform_points([[9, 19], [30, 19], [30, 40], [9, 40]], cv2.invertAffineTransform(matrix)))
    reach = cv2.fillConvexPoly(np.zeros(photo.shape[:2], np.uint8), box.astype(np.int32), 1).astype(bool)
    assert changed.sum() > 0.9 * 4 * 20 * 20 and not (changed & ~reach).any()  # ~4 photo px a crop px
    half = paste_back(photo, weight[..., None] * 0.5 * crop, weight * 0.5, matrix)[inside[1], inside[0]].astype(int)
    np.testing.assert_allclose(half, (photo[inside[1], inside[0]].astype(int) + 77) / 2, atol=1)


def test_mask_beyond_crop_finds_the_strip_below_the_crop_and_leaves_the_face():
    rng = np.random.default_rng(5)
    photo = np.clip(rng.normal((200, 160, 130), 6, (300, 300, 3)), 0, 255).astype(np.uint8)
    blue = lambda shape: np.clip(rng.normal((40, 70, 200), 6, shape + (3,)), 0, 255).astype(np.uint8)  # noqa: E731
    # the cheeks and the neck in shadow, darker than the face above: the repainted region reaches
    # them, the mask's colours must not include them
    photo[140:, 40:260] = np.clip(rng.normal((120, 85, 70), 6, (160, 220, 3)), 0, 255).astype(np.uint8)
    photo[150:270, 80:220] = blue((120, 140))  # the mask runs 26 px past the crop's lower edge (y 244)
    eyes = [(114, 122), (184, 122)]  # where the template's eyes land, painted the mask's colour
    for x, y in eyes:
        photo[y - 5 : y + 5, x - 5 : x + 5] = blue((10, 10))
        photo[y:150, x - 2 : x + 2] = blue((150 - y, 4))  # joined to the mask, as shadows join eyes to it
    photo[280:, :30] = blue((20, 30))  # the same colour far from the face
    matrix = similarity(0.0, 0.5, -19.0, -10.0)  # the 112 px crop covers x 38-262, y 20-244
    occlusion = np.zeros((112, 112), np.float32)
    occlusion[65:, 21:91] = 1.0
    region = cv2.dilate(occlusion, np.ones((13, 13)))  # the repainted region reaches past the mask
    beyond = mask_beyond_crop(photo, region, occlusion, matrix)
    strip = np.zeros_like(beyond)
    strip[246:270, 82:218] = True
    assert beyond[strip].mean() > 0.9
    reached = cv2.warpAffine(region, cv2.invertAffineTransform(matrix), (300, 300)) > 0.5
    assert not (beyond & reached).any()  # only what the crop's region does not cover
    mask = np.zeros_like(beyond)
    mask[150:270, 80:220] = True
    near = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert not (beyond & ~near).any()  # neither the face (eyes and the lines to them) nor the far patch
    assert np.array_equal(mask_beyond_crop(photo, region, occlusion, matrix), beyond)  # the same answer again
    # too little mask to learn its colours from: nothing
    assert not mask_beyond_crop(photo, region * 0, occlusion, matrix).any()
    # a crop (nearly) outside the photo, as a face at its border can give: nothing, no error
    for tx, ty in ((-400.0, -10.0), (60.0, 170.0)):
        assert not mask_beyond_crop(photo, region, occlusion, similarity(0.0, 0.5, tx, ty)).any()


def test_inpaint_fills_holes_from_their_surroundings_at_any_scale():
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :80] = (200, 30, 30)
    image[:, 80:] = (30, 200, 30)
    holes = np.zeros((120, 160), bool)
    holes[50:70, 20:50] = True
    spoiled = image.copy()
    spoiled[holes] = (0, 0, 255)
    for scale in (1.0, 4.0):
        filled = inpaint(spoiled, holes, scale)
        assert np.abs(filled[holes].astype(int) - (200, 30, 30)).max() <= 8, scale
        grown = cv2.dilate(holes.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(scale) + 1).astype(bool)
        assert np.array_equal(filled[~grown], spoiled[~grown]), scale  # the rest as it was
    assert inpaint(spoiled, np.zeros_like(holes)) is spoiled
