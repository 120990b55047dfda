"""Similarity alignment of a detected face onto a 5-point template (ArcFace's by default).

The recognition network and the mask renderer both assume the landmarks sit at the
template's positions (eyes level, at fixed pixels), which is what this module guarantees.
"""

from __future__ import annotations

import cv2
import numpy as np

from meer.data.faceset import face_template


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src`` onto ``dst`` (Umeyama 1991). src, dst: [K, 2] with K >= 2. Returns M float64 [2, 3],
    so that ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("source points are all at one place; no similarity is defined")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    # flip the weakest axis if the best orthogonal map would be a reflection
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = (singular * np.diag(sign)).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply an affine ``matrix`` [2, 3] to ``points`` [..., 2]; float32."""
    points = np.asarray(points, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def align_face(
    image: np.ndarray, landmarks5: np.ndarray, size: int = 112, template: str = "arcface"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp a face so its 5 landmarks land on the ``template`` (arcface | dlib) scaled to ``size``.

    image:      uint8 [H, W, 3]
    landmarks5: [5, 2] left eye, right eye, nose tip, left / right mouth corner (image coords)
    Returns the aligned face uint8 [size, size, 3], the matrix M float64 [2, 3] (image -> crop)
    and the landmarks in the crop float32 [5, 2] (near, not exactly on, the template).

    A face much larger than the crop (eyes more than 1.5 times the template's eye distance
    apart) is first shrunk with area averaging to that scale: a bilinear warp straight from
    a large face samples a few of its pixels and aliases. ``M`` still maps ``image``.
    """
    landmarks5 = np.asarray(landmarks5, np.float32)
    if landmarks5.shape != (5, 2):
        raise ValueError(f"landmarks5 must be [5, 2], got {landmarks5.shape}")
    target = face_template(template, size)
    eyes_crop = float(np.linalg.norm(target[1] - target[0]))
    eyes_photo = max(float(np.linalg.norm(landmarks5[1] - landmarks5[0])), 1e-6)
    shrink = min(1.0, 1.5 * eyes_crop / eyes_photo)
    if shrink < 1.0:
        image = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    matrix = estimate_similarity(landmarks5 * shrink, target)
    # black border like InsightFace's norm_crop, so its released crops and ours look alike
    aligned = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    matrix[:, :2] *= shrink  # from the shrunk copy's coordinates back to the image's
    return aligned, matrix, transform_points(landmarks5, matrix)


def paste_back(photo: np.ndarray, pixels: np.ndarray, weight: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``photo`` with crop pixels blended back in where they came from: ``photo * (1 - W) +
    warp(pixels)``, W the warped ``weight``.

    photo:  uint8 [H, W, 3] the photo that ``matrix`` [2, 3] (photo -> crop) aligned
    pixels: [S, S, 3] in the aligned frame, already weighted: ``weight * crop`` (0-255)
    weight: [S, S] in [0, 1], how much of each crop pixel replaces the photo's
    Photo pixels that no weight reaches are returned as they are. A crop smaller than the face
    in the photo comes back enlarged, as soft as it was.
    """
    height, width = photo.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))

    def warp(image: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(np.asarray(image, np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR,
                              borderValue=0)

    blended = photo * (1 - warp(weight)[..., None]) + warp(pixels)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


# Where the detector (MTCNN) puts the 5 landmarks inside its own face box, as shares of the
# box's width and height: the mean over 1,000 LFW photos of people in no test-fold pair,
# measured by bench/box_landmarks.py. In tight face crops (RMFRD's) the detected box nearly
# fills the frame and the median landmarks sit within 0.06 of these shares of the frame
# (same script, --tight; no identity labels read).
LANDMARKS_IN_BOX = np.array(
    [
        [0.2935, 0.3946],
        [0.7412, 0.3876],
        [0.5203, 0.5879],
        [0.3279, 0.7629],
        [0.7255, 0.7573],
    ],
    dtype=np.float32,
)


def frame_crop(
    image: np.ndarray, size: int = 112, template: str = "arcface"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fallback when no face is found in a tight face crop: the frame is the face box.

    The largest central square of ``image`` is taken as the detector's box, the mean landmark
    layout in a box (:data:`LANDMARKS_IN_BOX`) as the face's 5 points, and the face is aligned
    from them like a detected one, so it comes out at the template's scale. The landmarks
    are nominal, not measured, which is why the cache flags such rows. Same returns as
    :func:`align_face`.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    corner = np.array([(width - side) / 2, (height - side) / 2], np.float32)
    return align_face(image, LANDMARKS_IN_BOX * side + corner, size, template)
