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
the model's input size, the same alignment the training data had. The rules:

* no face found: :class:`NoFaceError`;
* several faces: the main one is used, chosen by :func:`meer.data.detect.pick_main_face` (the
  largest face, unless a slightly smaller one is much nearer the centre of the photo);
  :attr:`Face.num_faces` says how many were found;
* a file that is not an image: :class:`NotAnImageError`; a damaged or truncated one:
  :class:`CorruptImageError`; one with more pixels than allowed: :class:`ImageTooLargeError`
  (all three are :class:`ImageError`; every error here is a ``ValueError``).

With ``aligned=True`` inputs are taken as crops already aligned to the ArcFace template (such as
InsightFace's 112x112 crops) and only resized to the model's input size.

Same or different is decided at the threshold that ``meer eval`` stored with the checkpoint
(``calibration.json``). A checkpoint without one uses :data:`FALLBACK_THRESHOLD` and every
result says ``calibrated=False``: treat such decisions as indicative only. When the checkpoint
stores one threshold per setting (``meer eval --calibrate all``), :meth:`FaceModel.verify`
takes the one of the pair's setting (U-U, M-U, M-M) from the mask classifier's verdict on each
face; a network without a mask classifier (no decoupling module) uses the M-U threshold.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from meer.io import atomic_write

if TYPE_CHECKING:
    from meer.calibration import Calibration
    from meer.config import Config
    from meer.data.detect import Detector
    from meer.models.meer import MEER

# A typical operating point of ArcFace-style cosine scores; only used when the checkpoint
# carries no calibration, and then every result is flagged ``calibrated=False``.
FALLBACK_THRESHOLD = 0.3

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Detection runs on a copy at most this large: MTCNN's image pyramid grows with the photo, and
# a 12-megapixel phone picture would take many seconds on a CPU for no gain in accuracy.
DETECT_MAX_SIDE = 1024

GALLERY_FORMAT = "meer-gallery-1"


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


@dataclass
class Face:
    """A face ready for the network.

    aligned:   uint8 [S, S, 3] RGB crop, aligned to the ArcFace template at the model's size
    box:       float32 [4] x1, y1, x2, y2 in the photo; None for a pre-aligned input
    landmarks: float32 [5, 2] eyes, nose tip, mouth corners in the photo; None if pre-aligned
    score:     detector confidence; None if pre-aligned
    num_faces: faces found in the photo (the main one is this one); 1 if pre-aligned
    source:    the file name, when the input was a path (for messages)
    """

    aligned: np.ndarray
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    score: float | None = None
    num_faces: int = 1
    source: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready description (without the pixels)."""
        return {
            "box": None if self.box is None else [round(float(v), 1) for v in self.box],
            "landmarks": None if self.landmarks is None else [[round(float(v), 1) for v in p] for p in self.landmarks],
            "detection_score": None if self.score is None else round(float(self.score), 4),
            "num_faces": self.num_faces,
        }


ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | Face


@dataclass
class VerifyResult:
    """Whether two photos show the same person.

    score:      cosine similarity of the two embeddings, in [-1, 1]
    same:       ``score >= threshold``
    threshold:  the decision threshold used
    calibrated: False when the checkpoint had no calibration (the threshold is the fallback)
    faces:      the two faces that were compared
    setting:    the setting whose threshold was used: U-U, M-U or M-M from the mask verdicts;
                M-U when the network has no mask classifier
    masked:     the mask classifier's verdict on each face (None: the network has none)
    """

    score: float
    same: bool
    threshold: float
    calibrated: bool
    faces: tuple[Face, Face] = field(repr=False)
    setting: str = "M-U"
    masked: tuple[bool | None, bool | None] = (None, None)


@dataclass
class UnmaskResult:
    """The face with its mask taken off.

    restored:      uint8 [S, S, 3] the aligned crop with the predicted mask region repainted
    occlusion:     float32 [S, S] predicted probability that a pixel is covered by a mask
    mask_detected: the mask classifier's verdict (any class but "none")
    mask_type:     its class name ("none", "surgical", "n95", "cloth", ...)
    aligned:       uint8 [S, S, 3] the crop the network saw
    face:          the detection it came from
    """

    restored: np.ndarray = field(repr=False)
    occlusion: np.ndarray = field(repr=False)
    mask_detected: bool
    mask_type: str
    aligned: np.ndarray = field(repr=False)
    face: Face = field(repr=False)


class Match(NamedTuple):
    """One gallery identity and its similarity to the probe."""

    name: str
    score: float


@dataclass
class Gallery:
    """Enrolled people: one template embedding each (the mean of their photos' unit embeddings,
    normalised again).

    names:      person names, ``names[i]`` owns ``embeddings[i]``
    embeddings: float32 [K, D], unit norm
    counts:     photos that went into each template
    model:      fingerprint of the checkpoint that made it (a gallery only works with its model)
    skipped:    ``(input, reason)`` of photos left out during enrolment; not saved
    """

    names: list[str]
    embeddings: np.ndarray = field(repr=False)
    counts: list[int]
    model: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.embeddings) or len(self.counts) != len(self.names):
            raise ValueError("a gallery needs one name, one embedding and one count per person")
        if len(set(self.names)) != len(self.names):
            raise ValueError("gallery names must be unique")

    def __len__(self) -> int:
        return len(self.names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file: the ``embeddings`` tensor, and the names, counts and model
        fingerprint as JSON in its header metadata (no pickle anywhere)."""
        metadata = {
            "format": GALLERY_FORMAT,
            "names": json.dumps(self.names),
            "counts": json.dumps(self.counts),
            "model": self.model,
        }
        return save_embeddings(path, self.embeddings, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        """Read a gallery written by :meth:`save`."""
        embeddings, metadata = load_embeddings(path)
        if metadata.get("format") != GALLERY_FORMAT:
            raise ValueError(f"{path} is not a meer gallery (format {metadata.get('format')!r})")
        try:
            names, counts = json.loads(metadata["names"]), json.loads(metadata["counts"])
            return cls(names, embeddings, counts, metadata["model"])
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: damaged gallery metadata ({err})") from None


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, metadata: dict[str, str]) -> Path:
    """Write ``embeddings`` [N, D] float32 with string ``metadata`` as one safetensors file."""
    from safetensors.numpy import save_file

    tensors = {"embeddings": np.ascontiguousarray(embeddings, np.float32)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Read a file written by :func:`save_embeddings`: ``(embeddings [N, D], metadata)``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.get_tensor("embeddings"), dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types on foreign files
        raise ValueError(f"{path} is not a meer embeddings file ({err})") from None


def load_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Decode any supported input to an RGB uint8 array ``[H, W, 3]``.

    EXIF orientation is applied (phones store a portrait photo sideways with a rotation tag).
    ``max_pixels`` caps width x height, checked from the header before decoding; without it,
    Pillow's own decompression-bomb limit applies.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "the image")
        return np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = io.BytesIO(bytes(source)), "the uploaded data"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not an image")
        data, name = path, str(path)
    else:
        raise TypeError(f"expected a path, bytes, a PIL image or a numpy array, got {type(source).__name__}")
    try:
        image = Image.open(data)
    except Image.UnidentifiedImageError:
        raise NotAnImageError(f"{name} is not an image (or not in a format Pillow reads)") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name} is too large: {err}") from None
    with image:
        _check_size(image.size, max_pixels, name)
        try:
            image.load()
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise CorruptImageError(f"{name} is corrupt or truncated ({err})") from None


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


class FaceModel:
    """A trained MEER network with detection and alignment in front of it.

    Build it with :func:`load`. Methods are safe to call from one thread at a time.
    """

    def __init__(
        self,
        network: MEER,
        config: Config,
        checkpoint: Path,
        calibration: Calibration | None,
        detector: str | Detector | None = "auto",
        flip: bool = False,
        batch_size: int = 64,
    ) -> None:
        self.network = network
        self.config = config
        self.checkpoint = checkpoint
        self.calibration = calibration
        self.flip = flip
        self.batch_size = batch_size
        self._detector_spec = detector
        self._detector: Detector | None = None
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return (
            f"FaceModel({str(self.checkpoint)!r}, input_size={self.input_size}, "
            f"threshold={self.threshold:.4f}, calibrated={self.calibrated})"
        )

    @property
    def input_size(self) -> int:
        """Side of the aligned crops the network takes."""
        return self.network.input_size

    @property
    def embedding_dim(self) -> int:
        return self.network.backbone.head.fc.out_features

    @property
    def has_generator(self) -> bool:
        """Whether :meth:`unmask` is available (the baselines have no generator)."""
        return self.network.generator is not None

    @property
    def threshold(self) -> float:
        """Cosine similarity at or above which two faces are called the same person."""
        return self.calibration.threshold if self.calibration is not None else FALLBACK_THRESHOLD

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def threshold_for(self, setting: str | None) -> float:
        """The threshold of a setting (U-U / M-U / M-M) when the calibration has one per
        setting, else :attr:`threshold`."""
        return self.calibration.threshold_for(setting) if self.calibration is not None else FALLBACK_THRESHOLD

    @property
    def has_mask_classifier(self) -> bool:
        """Whether the network says if a face is masked (its decoupling module's mask head)."""
        return self.network.decouple is not None

    @property
    def fingerprint(self) -> str:
        """Identifies the checkpoint (a hash of its ``state.json``: config, step, versions)."""
        if self._fingerprint is None:
            from meer.train.checkpoint import STATE

            digest = hashlib.sha256((self.checkpoint / STATE).read_bytes()).hexdigest()
            self._fingerprint = digest[:16]
        return self._fingerprint

    @property
    def detector(self) -> Detector:
        """The face detector, created on first use (pre-aligned inputs never need it)."""
        if self._detector is None:
            spec = self._detector_spec
            if spec is None:
                raise ValueError("this model was loaded with detector=None: pass aligned crops (aligned=True)")
            if isinstance(spec, str):
                from meer.data.detect import create_detector

                spec = create_detector(spec)
            self._detector = spec
        return self._detector

    # ------------------------------------------------------------------ faces

    def face(self, image: ImageInput, aligned: bool = False, max_pixels: int | None = None) -> Face:
        """Detect and align the main face of a photo (or resize a pre-aligned crop).

        Raises :class:`NoFaceError` when there is none, :class:`ImageError` for inputs that
        are not usable images. ``max_pixels`` caps the photo's size (see :func:`load_image`).
        """
        if isinstance(image, Face):
            if image.aligned.shape != (self.input_size, self.input_size, 3):
                raise ValueError(f"this Face is {image.aligned.shape[0]} px; the model takes {self.input_size} px")
            return image
        source = str(image) if isinstance(image, (str, os.PathLike)) else None
        pixels = load_image(image, max_pixels)
        if aligned:
            return Face(self._resize(pixels), source=source)
        return self._detect_and_align(pixels, source)

    def _resize(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        size = self.input_size
        if crop.shape[:2] == (size, size):
            return crop
        shrinking = min(crop.shape[:2]) > size
        return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def _detect_and_align(self, image: np.ndarray, source: str | None) -> Face:
        import cv2

        from meer.data.align import align_face
        from meer.data.detect import detect_with_padding, pick_main_face
        from meer.data.faceset import face_template

        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = detect_with_padding(self.detector, small)
        main = pick_main_face(found, small.shape)
        if main is None:
            raise NoFaceError(f"no face found in {source or 'the image'}")
        box, landmarks = main.box / scale, main.landmarks5 / scale
        # A face much larger than the crop is shrunk with area averaging first, so that the
        # bilinear warp of the alignment does not alias.
        alignment = self.config.model.alignment
        template = face_template(alignment, self.input_size)
        eyes_crop = float(np.linalg.norm(template[1] - template[0]))
        eyes_photo = max(float(np.linalg.norm(landmarks[1] - landmarks[0])), 1e-6)
        shrink = min(1.0, 1.5 * eyes_crop / eyes_photo)
        if shrink < 1.0:
            warped_from = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
            crop = align_face(warped_from, landmarks * shrink, self.input_size, alignment)[0]
        else:
            crop = align_face(image, landmarks, self.input_size, alignment)[0]
        return Face(crop, box.astype(np.float32), landmarks.astype(np.float32), float(main.score), len(found), source)

    def _faces(self, images: ImageInput | Sequence[ImageInput], aligned: bool) -> list[Face]:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        return [self.face(image, aligned) for image in images]

    # ------------------------------------------------------------------ recognition

    def embed(self, images: ImageInput | Sequence[ImageInput], aligned: bool = False) -> np.ndarray:
        """Unit-norm identity embeddings, float32 ``[N, D]``, one row per input.

        ``images`` is one input or a list of them (a uint8 ``[N, H, W, 3]`` array is a list).
        """
        return self._embed_faces(self._faces(images, aligned))

    def _embed_faces(self, faces: list[Face]) -> np.ndarray:
        from meer.eval.embed import embed_images

        if not faces:
            return np.zeros((0, self.embedding_dim), np.float32)
        crops = np.stack([face.aligned for face in faces])
        return embed_images(self.network, crops, self.batch_size, flip=self.flip)

    def mask_verdicts(self, images: ImageInput | Sequence[ImageInput], aligned: bool = False) -> list[bool | None]:
        """Whether each face wears a mask, by the network's mask classifier (any class but
        "none"); None for every face when the network has no mask classifier."""
        from meer.eval.embed import mask_classes

        faces = self._faces(images, aligned)
        if not self.has_mask_classifier:
            return [None] * len(faces)
        if not faces:
            return []
        return [bool(c != 0) for c in mask_classes(self.network, np.stack([f.aligned for f in faces]), self.batch_size)]

    def verify(self, a: ImageInput, b: ImageInput, aligned: bool = False) -> VerifyResult:
        """Compare two photos at the checkpoint's calibrated threshold for their setting (from
        the mask verdict on each face, see :class:`VerifyResult`)."""
        from meer.calibration import pair_setting

        faces = (self.face(a, aligned), self.face(b, aligned))
        first, second = self._embed_faces(list(faces))
        score = float(first @ second)
        masked = tuple(self.mask_verdicts(list(faces)))
        setting = "M-U" if None in masked else pair_setting(*masked)
        threshold = self.threshold_for(setting)
        return VerifyResult(score, score >= threshold, threshold, self.calibrated, faces, setting, masked)

    def unmask(self, image: ImageInput, aligned: bool = False) -> UnmaskResult:
        """Repaint the masked lower face with the generator; also say whether a mask is worn."""
        from meer.eval.embed import unmask_images

        if not self.has_generator:
            raise ValueError(f"{self.checkpoint} was trained without a generator, so it cannot unmask")
        face = self.face(image, aligned)
        out = unmask_images(self.network, face.aligned[None], batch_size=1)
        mask_class = int(out.mask_type[0])
        return UnmaskResult(
            restored=out.restored[0],
            occlusion=out.occlusion[0],
            mask_detected=mask_class != 0,
            mask_type=mask_type_name(mask_class),
            aligned=face.aligned,
            face=face,
        )

    def enroll(
        self,
        people: str | os.PathLike | Mapping[str, Sequence[ImageInput]],
        aligned: bool = False,
        skip_errors: bool = False,
    ) -> Gallery:
        """Build a gallery from ``{name: [photos]}`` or a folder laid out ``<folder>/<name>/*.jpg``.

        With ``skip_errors`` a photo without a usable face is left out (and listed in
        ``Gallery.skipped``) instead of stopping the enrolment; a person left with no photo is
        left out too.
        """
        if isinstance(people, (str, os.PathLike)):
            root = Path(people)
            if not root.is_dir():
                raise FileNotFoundError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
            people = {d.name: image_files(d) for d in sorted(root.iterdir()) if d.is_dir()}
            if not people:
                raise ValueError(f"{root} has no sub-folders: expected {root}/<person>/<photo>.jpg")
        names, templates, counts, skipped = [], [], [], []
        for name, photos in people.items():
            faces = []
            for photo in photos:
                try:
                    faces.append(self.face(photo, aligned))
                except (ImageError, NoFaceError) as err:
                    if not skip_errors:
                        raise
                    skipped.append((str(photo) if isinstance(photo, (str, os.PathLike)) else name, str(err)))
            if not faces:
                if not skip_errors:
                    raise ValueError(f"no photos for {name!r}")
                skipped.append((name, "no usable photo"))
                continue
            mean = self._embed_faces(faces).mean(0)
            templates.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            names.append(str(name))
            counts.append(len(faces))
        if not names:
            raise ValueError("nobody could be enrolled: no usable photos")
        return Gallery(names, np.stack(templates).astype(np.float32), counts, self.fingerprint, skipped)

    def identify(self, probe: ImageInput, gallery: Gallery, top_k: int = 5, aligned: bool = False) -> list[Match]:
        """The ``top_k`` gallery people most similar to the probe, best first.

        The best match is the same person only if its score reaches :attr:`threshold`.
        """
        if gallery.model != self.fingerprint:
            raise ValueError(
                f"the gallery was enrolled with another model ({gallery.model}, this one is "
                f"{self.fingerprint}); enrol it again with this model"
            )
        embedding = self.embed(probe, aligned)[0]
        scores = gallery.embeddings @ embedding
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [Match(gallery.names[i], float(scores[i])) for i in order]


def mask_type_name(index: int) -> str:
    """The name of a mask class predicted by the network (0 = no mask)."""
    from meer.data.masks import MASK_CLASSES

    return MASK_CLASSES[index] if 0 <= index < len(MASK_CLASSES) else f"type {index}"


def default_model() -> Path:
    """The folder of the model meer ships (``meer/default_model``: weights, calibration, provenance)."""
    from importlib import resources

    return Path(str(resources.files("meer") / "default_model"))


def load(
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    detector: str | Detector | None = "auto",
    flip: bool = False,
) -> FaceModel:
    """Load a trained model for use on photos.

    checkpoint: a checkpoint folder (``runs/x/checkpoints/step_N``), a run folder (its
                latest checkpoint) or a release folder (``meer export``); None for the model
                meer ships (:func:`default_model`). Only safetensors and JSON are read.
    device:     torch device, e.g. ``"cpu"`` or ``"cuda"``.
    detector:   ``"auto"`` (the first installed of MTCNN, MediaPipe), a backend name, a
                detector object, or None for pre-aligned crops only. Created on first use.
    flip:       add the mirrored face's embedding (test-time augmentation). The stored
                calibration is made without it, so leave it off unless you recalibrate.
    """
    from meer.calibration import read_calibration
    from meer.train.checkpoint import find_checkpoint
    from meer.train.trainer import load_model

    folder = find_checkpoint(default_model() if checkpoint is None else checkpoint)
    network, config, _ = load_model(folder, device)
    return FaceModel(network, config, folder, read_calibration(folder), detector, flip)
