"""Photo in, aligned face out: the one road from an image to the crop a network sees.

``meer prepare`` (training and test caches), the API (:meth:`meer.api.FaceModel.face`) and the
service all take this road, so a face is cropped the same way for training and for use:

1. :func:`load_image` decodes with Pillow, applies the EXIF orientation (phones store a
   portrait photo sideways with a rotation tag) and gives RGB uint8; an unusable input raises
   an :class:`ImageError` whose message names the input;
2. :func:`align_photo` detects faces on a copy no larger than
   :data:`~meer.data.detect.DETECT_MAX_SIDE` (retrying with a padded border when nothing is
   found, see :func:`~meer.data.detect.detect_faces`), picks the main face
   (:func:`~meer.data.detect.pick_main_face`) and aligns it onto the template
   (:func:`~meer.data.align.align_face`, which shrinks a large face before the warp).

Crops that are already aligned only go through :func:`resize_aligned`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from meer.data.align import align_face
from meer.data.detect import Detector, detect_faces, pick_main_face

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class NoFaceError(ValueError):
    """The detector found no face in a photo."""


class ImageError(ValueError):
    """An input that cannot be used as an image."""


class NotAnImageError(ImageError):
    """The data is not in an image format that Pillow reads."""


class CorruptImageError(ImageError):
    """The image is damaged or truncated."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed."""


def input_name(source: object) -> str:
    """How messages call an input: its path, or what kind of input it is."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the uploaded data"
    return "the image"


def load_image(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray,
    max_pixels: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode any supported input to an RGB uint8 array ``[H, W, 3]``.

    EXIF orientation is applied. ``max_pixels`` caps width x height, checked from the header
    before decoding; without it, Pillow's own decompression-bomb limit applies. ``name`` is
    how error messages call the input (default: :func:`input_name`).
    """
    name = name or input_name(source)
    if isinstance(source, np.ndarray):
        pixels = _from_array(source)
        _check_size(pixels.shape[1::-1], max_pixels, name)
        return pixels
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, name)
        return _rgb(ImageOps.exif_transpose(source), name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        data = Path(source)
        if not data.exists():
            raise FileNotFoundError(f"{data} does not exist")
        if data.is_dir():
            raise IsADirectoryError(f"{data} is a folder, not an image")
    else:
        raise TypeError(f"expected a path, bytes, a PIL image or a numpy array, got {type(source).__name__}")
    try:
        image = Image.open(data)
    except Image.UnidentifiedImageError:
        raise NotAnImageError(f"{name} is not an image (or not in a format Pillow reads)") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name} is too large: {err}") from None
    except PermissionError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # a known format's header, damaged
        raise CorruptImageError(f"{name} is corrupt or truncated ({err})") from None
    with image:
        _check_size(image.size, max_pixels, name)
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise CorruptImageError(f"{name} is corrupt or truncated ({err})") from None
        return _rgb(oriented, name)


def _rgb(image: Image.Image, name: str) -> np.ndarray:
    """uint8 RGB pixels of any Pillow image. Pillow's own conversion clips 16- and 32-bit
    greyscale at 255 (a 16-bit PNG came out white), so those are scaled down first."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = np.asarray(image, np.float64)
        if grey.max(initial=0) > 255:  # 16-bit range
            grey = grey / 257
        image = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8))
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as err:  # a mode Pillow cannot turn into RGB ("La", ...)
        raise NotAnImageError(f"{name}: Pillow cannot read its pixels as RGB (mode {image.mode}: {err})") from None


def _check_size(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} pixels; the limit is {max_pixels / 1e6:g} megapixels"
        )


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 RGB [H, W, 3], got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"numpy images must be uint8 RGB [H, W, 3], got shape {array.shape}")
    return np.ascontiguousarray(array)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class PhotoFace:
    """The main face of a photo, aligned.

    crop:            uint8 [S, S, 3] RGB, aligned to the template at size S
    matrix:          float64 [2, 3] photo -> crop
    landmarks:       float32 [5, 2] the 5 landmarks in the crop
    box:             float32 [4] x1, y1, x2, y2 in the photo
    photo_landmarks: float32 [5, 2] the 5 landmarks in the photo
    score:           detector confidence
    num_faces:       faces found in the photo (this is the main one)
    """

    crop: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    photo_landmarks: np.ndarray
    score: float
    num_faces: int


def align_photo(image: np.ndarray, detector: Detector, size: int, template: str = "arcface") -> PhotoFace | None:
    """Detect the main face of an RGB uint8 photo ``[H, W, 3]`` and align it onto ``template``
    (``arcface`` | ``dlib``) at ``size``; None when no face is found."""
    found = detect_faces(detector, image)
    main = pick_main_face(found, image.shape)
    if main is None:
        return None
    crop, matrix, landmarks = align_face(image, main.landmarks5, size, template)
    return PhotoFace(
        crop, matrix, landmarks, main.box.astype(np.float32), main.landmarks5.astype(np.float32),
        float(main.score), len(found),
    )


def resize_aligned(crop: np.ndarray, size: int) -> np.ndarray:
    """A crop already aligned to the template, brought to ``size`` x ``size`` (area averaging
    when shrinking, bilinear when enlarging)."""
    if crop.shape[:2] == (size, size):
        return crop
    shrinking = min(crop.shape[:2]) > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
