"""The model on photos: :class:`FaceModel` (detection and alignment in front of a trained
network: embed, verify, unmask, enrol, identify) and :func:`load`.

See :mod:`meer.api` for the rules on inputs, faces and thresholds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from meer.api.embeddings import Gallery
from meer.api.results import Face, ImageInput, Match, UnmaskResult, VerifyResult, photo_list
from meer.calibration import Calibration, pair_setting, read_calibration
from meer.config import Config
from meer.data.detect import Detector, create_detector
from meer.data.masks import MASK_CLASSES
from meer.data.photos import (
    NoFaceError,
    align_photo,
    image_files,
    input_name,
    load_image,
    resize_aligned,
)
from meer.inference.batched import embed_and_classify, embed_images, mask_classes, unmask_images
from meer.inference.checkpoint import (
    STATE,
    find_checkpoint,
    is_release,
    load_model,
)
from meer.models.meer import MEER

# A typical operating point of ArcFace-style cosine scores; only used when the checkpoint
# carries no calibration, and then every result is flagged ``calibrated=False``.
FALLBACK_THRESHOLD = 0.3


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
        return self.network.embedding_dim

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
        """Identifies the network, for galleries and embedding files: a hash of a checkpoint's
        ``state.json`` (config, step, versions), or of a release's weights as loaded and its model
        config (a release made from a checkpoint may hold them in half precision or int8, so its
        embeddings are not quite the checkpoint's; exporting the same numbers again keeps the
        fingerprint)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            if is_release(self.checkpoint):  # the numbers the network computes with, however stored
                for key, tensor in sorted(self.network.state_dict().items()):
                    digest.update(key.encode())
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
                digest.update(json.dumps(dataclasses.asdict(self.config.model), sort_keys=True).encode())
            else:
                digest.update((self.checkpoint / STATE).read_bytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    @property
    def detector(self) -> Detector:
        """The face detector, created on first use (pre-aligned inputs never need it)."""
        if self._detector is None:
            spec = self._detector_spec
            if spec is None:
                raise ValueError("this model was loaded with detector=None: pass aligned crops (aligned=True)")
            if isinstance(spec, str):
                spec = create_detector(spec)
            self._detector = spec
        return self._detector

    # ------------------------------------------------------------------ faces

    def face(
        self, image: ImageInput, aligned: bool = False, max_pixels: int | None = None, name: str | None = None
    ) -> Face:
        """Detect and align the main face of a photo (or resize a pre-aligned crop), the way
        ``meer prepare`` does (:mod:`meer.data.photos`).

        Raises :class:`NoFaceError` when there is none, :class:`ImageError` for inputs that
        are not usable images. ``max_pixels`` caps the photo's size (see :func:`load_image`);
        ``name`` is what error messages call the input (default: its path, or "the uploaded
        data" for bytes).
        """
        if isinstance(image, Face):
            if image.aligned.shape != (self.input_size, self.input_size, 3):
                raise ValueError(f"this Face is {image.aligned.shape[0]} px; the model takes {self.input_size} px")
            return image
        source = name or (str(image) if isinstance(image, (str, os.PathLike)) else None)
        pixels = load_image(image, max_pixels, name)
        if aligned:
            return Face(resize_aligned(pixels, self.input_size), source=source)
        found = align_photo(pixels, self.detector, self.input_size, self.config.model.alignment)
        if found is None:
            raise NoFaceError(f"no face found in {name or input_name(image)}")
        return Face(found.crop, found.box, found.photo_landmarks, found.score, found.num_faces, source, found.matrix,
                    pixels.shape[1::-1])

    def _faces(self, images: ImageInput | Sequence[ImageInput], aligned: bool) -> list[Face]:
        return [self.face(image, aligned) for image in photo_list(images)]

    # ------------------------------------------------------------------ recognition

    def embed(self, images: ImageInput | Sequence[ImageInput], aligned: bool = False) -> np.ndarray:
        """Unit-norm identity embeddings, float32 ``[N, D]``, one row per input.

        ``images`` is one input or a list of them (a uint8 ``[N, H, W, 3]`` array is a list).
        """
        return self._embed_faces(self._faces(images, aligned))

    def _embed_faces(self, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.embedding_dim), np.float32)
        crops = np.stack([face.aligned for face in faces])
        return embed_images(self.network, crops, self.batch_size, flip=self.flip)

    def mask_verdicts(self, images: ImageInput | Sequence[ImageInput], aligned: bool = False) -> list[bool | None]:
        """Whether each face wears a mask, by the network's mask classifier (any class but
        "none"); None for every face when the network has no mask classifier."""
        faces = self._faces(images, aligned)
        if not self.has_mask_classifier:
            return [None] * len(faces)
        if not faces:
            return []
        return [bool(c != 0) for c in mask_classes(self.network, np.stack([f.aligned for f in faces]), self.batch_size)]

    def embed_with_verdicts(
        self, images: ImageInput | Sequence[ImageInput], aligned: bool = False
    ) -> tuple[np.ndarray, list[bool | None]]:
        """:meth:`embed` and :meth:`mask_verdicts` of the same faces, from one pass of the network."""
        faces = self._faces(images, aligned)
        if not faces:
            return np.zeros((0, self.embedding_dim), np.float32), []
        crops = np.stack([face.aligned for face in faces])
        embeddings, classes = embed_and_classify(self.network, crops, self.batch_size, flip=self.flip)
        masked = [None] * len(faces) if classes is None else [bool(c != 0) for c in classes]
        return embeddings, masked

    def verify(self, a: ImageInput, b: ImageInput, aligned: bool = False) -> VerifyResult:
        """Compare two photos at the checkpoint's calibrated threshold for their setting (from
        the mask verdict on each face, see :class:`VerifyResult`)."""
        faces = (self.face(a, aligned), self.face(b, aligned))
        (first, second), masked = self.embed_with_verdicts(list(faces))
        score = float(first @ second)
        masked = tuple(masked)
        setting = "M-U" if None in masked else pair_setting(*masked)
        threshold = self.threshold_for(setting)
        return VerifyResult(score, score >= threshold, threshold, self.calibrated, faces, setting, masked)

    def unmask(self, image: ImageInput, aligned: bool = False, flip: bool = True) -> UnmaskResult:
        """Repaint the masked lower face with the generator; also say whether a mask is worn.

        Only a face the mask classifier finds masked is repainted: for any other, ``restored`` is
        the aligned crop itself (a restoration of a bare face could only degrade it). ``flip``
        averages in the restoration of the mirrored face (twice the work; better on every measure
        of BENCHMARKS.md 8)."""
        if not self.has_generator:
            raise ValueError(f"{self.checkpoint} was trained without a generator, so it cannot unmask")
        face = self.face(image, aligned)
        out = unmask_images(self.network, face.aligned[None], batch_size=1, masked_only=True, flip=flip)
        mask_class = int(out.mask_type[0])
        return UnmaskResult(
            restored=out.restored[0],
            occlusion=out.occlusion[0],
            mask_detected=mask_class != 0,
            mask_type=mask_type_name(mask_class),
            aligned=face.aligned,
            face=face,
            region=out.region[0],
        )

    def enroll(
        self,
        people: str | os.PathLike | Mapping[str, Sequence[ImageInput]],
        aligned: bool = False,
        skip_errors: bool = False,
    ) -> Gallery:
        """Build a gallery from ``{name: [photos]}`` (or ``{name: photo}``) or a folder laid out
        ``<folder>/<name>/*.jpg``.

        With ``skip_errors`` a photo that cannot be used (no face, not an image, missing) is left
        out (and listed in ``Gallery.skipped``) instead of stopping the enrolment; a person left
        with no photo is left out too.
        """
        if not isinstance(people, (str, os.PathLike, Mapping)):
            raise TypeError(f"people: a folder or a mapping {{name: photos}}, got {type(people).__name__}")
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
            for photo in photo_list(photos):
                try:
                    faces.append(self.face(photo, aligned))
                except (ValueError, OSError) as err:  # ImageError, NoFaceError, a missing file, ...
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

    def identify(
        self, probe: ImageInput, gallery: Gallery | str | os.PathLike, top_k: int = 5, aligned: bool = False
    ) -> list[Match]:
        """The ``top_k`` gallery people most similar to the probe, best first. ``gallery``: a
        :class:`Gallery` or the file :meth:`Gallery.save` wrote, or a gallery database
        (:func:`meer.gallery.open_gallery`, or its ``.db`` path), where a person scores by their
        best template (:func:`meer.gallery.identify_photo` also says who it is, or unknown).

        The best match is the same person only if its score reaches :attr:`threshold`.
        """
        from meer.gallery import GalleryStore, is_database, open_gallery

        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number of at least 1, got {top_k!r}")
        if isinstance(gallery, (str, os.PathLike)):
            gallery = open_gallery(gallery, self, create=False) if is_database(gallery) else Gallery.load(gallery)
        if not isinstance(gallery, (Gallery, GalleryStore)):
            raise TypeError(f"gallery: a Gallery, a GalleryStore or the path of one, got {type(gallery).__name__}")
        enrolled_by = gallery.model if isinstance(gallery, Gallery) else gallery.fingerprint
        if enrolled_by != self.fingerprint:
            raise ValueError(
                f"the gallery was enrolled with another model ({enrolled_by}, this one is "
                f"{self.fingerprint}); enrol it again with this model"
            )
        embedding = self.embed(probe, aligned)[0]
        if isinstance(gallery, GalleryStore):  # a gallery database: each person's best template
            return gallery.search(embedding[None], top_k)[0]
        scores = gallery.embeddings @ embedding
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [Match(gallery.names[i], float(scores[i])) for i in order]


def mask_type_name(index: int) -> str:
    """The name of a mask class predicted by the network (0 = no mask)."""
    return MASK_CLASSES[index] if 0 <= index < len(MASK_CLASSES) else f"type {index}"


def default_model() -> Path:
    """The folder of the model meer ships (``meer/default_model``: weights, calibration, provenance)."""
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
    detector:   ``"auto"`` (MTCNN, then MediaPipe and YuNet where installed, each asked
                when the one before finds no face), a backend name, a
                detector object, or None for pre-aligned crops only. Created on first use.
    flip:       add the mirrored face's embedding (test-time augmentation). The stored
                calibration is made without it, so leave it off unless you recalibrate.
    """
    if str(device).startswith("meta"):
        raise ValueError("device 'meta' holds no numbers: choose cpu, cuda or mps")
    folder = find_checkpoint(default_model() if checkpoint is None else checkpoint)
    network, config, _ = load_model(folder, device)
    return FaceModel(network, config, folder, read_calibration(folder), detector, flip)
