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


def crop_scale(matrix: np.ndarray) -> float:
    """Photo pixels per crop pixel of an alignment ``matrix`` [2, 3] (photo -> crop)."""
    return 1.0 / float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def mask_beyond_crop(
    photo: np.ndarray, region: np.ndarray, occlusion: np.ndarray, matrix: np.ndarray, reach: float = 0.18
) -> np.ndarray:
    """Photo pixels of the mask that the crop's repainted ``region`` does not cover: the strip below
    the crop's lower edge, ear loops, a rim the occlusion map missed.

    OpenCV's GrabCut learns the mask's colours from the pixels the occlusion map is sure of, and the
    face's from the pixels it calls unmasked away from the crop's edges; it then labels the pixels
    within ``reach`` (a share of the crop's side) of the region. Only parts joined to the mask count.
    photo: uint8 [H, W, 3]; region, occlusion: [S, S] in the aligned frame; matrix: photo -> crop.
    Returns bool [H, W]; all False when the region is too small to learn from or the labelled part
    grows larger than the region itself (a mask the colour of the clothes: better left than smeared).
    """
    height, width = photo.shape[:2]
    size = region.shape[0]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    scale = crop_scale(matrix)
    margin = reach * size * scale
    corners = transform_points([[0, 0], [size, 0], [0, size], [size, size]], inverse)
    x0, y0 = np.maximum(np.floor(corners.min(0) - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(corners.max(0) + margin), [width, height]).astype(int)
    if x1 - x0 < 8 or y1 - y0 < 8:  # the crop lies (nearly) outside the photo
        return np.zeros((height, width), bool)
    shrink = min(1.0, 2 * size / max(x1 - x0, y1 - y0) * (1 + 2 * reach))  # GrabCut on <= ~2x the crop's pixels
    w, h = max(1, round((x1 - x0) * shrink)), max(1, round((y1 - y0) * shrink))
    window = cv2.resize(photo[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    to_window = inverse.copy()
    to_window[:, 2] -= (x0, y0)
    to_window *= shrink

    def warp(image: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(np.asarray(image, np.float32), to_window, (w, h), flags=cv2.INTER_LINEAR)

    region, occlusion = warp(region), warp(occlusion)  # from here on, in the window
    core = (region > 0.9) & (occlusion > 0.9)  # surely mask: the region is grown past it
    if core.sum() < 50:
        return np.zeros((height, width), bool)
    covered = region > 0.5
    distance = cv2.distanceTransform((~covered).astype(np.uint8), cv2.DIST_L2, 5)  # window px to the region
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[distance <= reach * size * scale * shrink] = cv2.GC_PR_BGD
    # the face proper (eyes, brows, nose bridge) must not be taken: where the occlusion map calls its
    # pixels unmasked they are the face's; the crop's side and lower edges (ears, chin) stay open
    face = np.zeros((size, size), np.float32)
    face[: int(0.9 * size), int(0.12 * size) : int(0.88 * size)] = 1
    labels[(warp(face) > 0.5) & (occlusion < 0.1)] = cv2.GC_BGD
    labels[core] = cv2.GC_FGD
    models = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means++ on OpenCV's global generator
    cv2.grabCut(np.ascontiguousarray(window[..., ::-1]), labels, None, *models, 4, cv2.GC_INIT_WITH_MASK)
    found = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    _, parts = cv2.connectedComponents(found.astype(np.uint8))
    joined = np.isin(parts, np.unique(parts[core])) & found & ~covered
    if joined.sum() > covered.sum():
        return np.zeros((height, width), bool)
    beyond = np.zeros((height, width), bool)
    resized = cv2.resize(joined.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    beyond[y0:y1, x0:x1] = resized.astype(bool)
    return beyond


def inpaint(image: np.ndarray, holes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``image`` (uint8 [H, W, 3]) with the ``holes`` (bool [H, W]) filled from their surroundings by
    OpenCV's Telea inpainting, done at ``1 / scale`` of the image's size (``scale`` > 1: the photo px
    per crop px), so that a hole on a large face fills as smoothly as on a small one."""
    if not holes.any():
        return image
    shrink = min(1.0, 1.0 / max(scale, 1e-6))
    pad = int(np.ceil(8 / shrink))
    ys, xs = np.nonzero(holes)
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = min(ys.max() + pad + 1, image.shape[0]), min(xs.max() + pad + 1, image.shape[1])
    window, hole = image[y0:y1, x0:x1], holes[y0:y1, x0:x1]
    small = cv2.resize(window, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_AREA) > 0
    # a pixel more all round, for the hole's antialiased edge
    small_hole = cv2.dilate(small_hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    filled = cv2.resize(cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA), window.shape[1::-1],
                        interpolation=cv2.INTER_LINEAR)
    grown = cv2.resize(small_hole, window.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    out = image.copy()
    out[y0:y1, x0:x1][grown] = filled[grown]
    return out
