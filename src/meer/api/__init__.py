"""Using a trained model on ordinary photos: embeddings, verification, unmasking, identification.

    >>> import meer
    >>> model = meer.load("runs/tiny")            # a run folder (its latest checkpoint) or a checkpoint
    >>> result = model.verify("a.jpg", "b.jpg")   # VerifyResult(score=0.71, same=True, ...)
    >>> restored = model.unmask("masked.jpg").restored   # uint8 [S, S, 3]
    >>> gallery = model.enroll("people/")         # people/<name>/*.jpg
    >>> model.identify("probe.jpg", gallery)      # [Match(name='ann', score=0.64), ...]

Inputs are file paths, encoded image bytes, PIL images or RGB uint8 numpy arrays
(``[H, W, 3]``; grey ``[H, W]`` and RGBA are converted), or a :class:`Face` that
:meth:`FaceModel.face` returned (so a photo is detected once and used several times).

Photos go through detection and a similarity alignment onto the ArcFace 5-point template at
the model's input size: the same function (:mod:`meer.data.photos`) that ``meer prepare`` runs
on training and test photos, so a face is cropped alike for both. The rules:

* no face found: :class:`NoFaceError`;
* several faces: the main one is used, chosen by :func:`meer.data.detect.pick_main_face` (the
  largest face, unless a slightly smaller one is much nearer the centre of the photo);
  :attr:`Face.num_faces` says how many were found;
* a file that is not an image: :class:`NotAnImageError`; a damaged or truncated one:
  :class:`CorruptImageError`; one with more pixels than allowed: :class:`ImageTooLargeError`
  (all three are :class:`ImageError`; every error here is a ``ValueError``). Messages name
  the input: its path, "the uploaded data" for bytes, or the ``name`` given to
  :meth:`FaceModel.face`.

With ``aligned=True`` inputs are taken as crops already aligned to the ArcFace template (such as
InsightFace's 112x112 crops) and only resized to the model's input size.

Same or different is decided at the threshold stored with the checkpoint
(``calibration.json``, written by the evaluation command, ``eval``). A checkpoint without one uses :data:`FALLBACK_THRESHOLD` and every
result says ``calibrated=False``: treat such decisions as indicative only. When the checkpoint
stores one threshold per setting (``eval --calibrate all``), :meth:`FaceModel.verify`
takes the one of the pair's setting (U-U, M-U, M-M) from the mask classifier's verdict on each
face; a network without a mask classifier (no decoupling module) uses the M-U threshold.

The package's modules: :mod:`meer.api.model` (:class:`FaceModel`, :func:`load`),
:mod:`meer.api.results` (what the methods return), :mod:`meer.api.embeddings` (galleries and
embeddings files); images are decoded by :mod:`meer.data.photos`.
"""

from meer.api.embeddings import GALLERY_FORMAT, Gallery, load_embeddings, save_embeddings
from meer.api.model import FALLBACK_THRESHOLD, FaceModel, default_model, load, mask_type_name
from meer.api.results import Face, ImageInput, Match, UnmaskResult, VerifyResult
from meer.data.detect import DETECT_MAX_SIDE
from meer.data.photos import (
    IMAGE_SUFFIXES,
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    NoFaceError,
    NotAnImageError,
    image_files,
    load_image,
)

__all__ = [
    "CorruptImageError",
    "DETECT_MAX_SIDE",
    "FALLBACK_THRESHOLD",
    "Face",
    "FaceModel",
    "GALLERY_FORMAT",
    "Gallery",
    "IMAGE_SUFFIXES",
    "ImageError",
    "ImageInput",
    "ImageTooLargeError",
    "Match",
    "NoFaceError",
    "NotAnImageError",
    "UnmaskResult",
    "VerifyResult",
    "default_model",
    "image_files",
    "load",
    "load_embeddings",
    "load_image",
    "mask_type_name",
    "save_embeddings",
]
