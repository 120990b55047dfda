"""The common in-memory form of an aligned face dataset.

Every data source (the procedural synthetic faces, the aligned cache written by
``meer prepare``) hands training and evaluation a :class:`FaceSet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 5-point order used everywhere (ArcFace convention, image coordinates):
# left eye, right eye, nose tip, left mouth corner, right mouth corner
# ("left" = smaller x in the image).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


# The same 5 points where dlib's face chip (get_face_chip, 150 px, padding 0.25) puts them on
# average: the framing dlib's ResNet was trained on, closer than ArcFace's and centred lower
# (eyes at 30% of the height instead of 46%, the whole chin inside).
# Measured by bench/dlib_template.py (the mean over 299 LFW training photos of our detector's
# landmarks mapped into dlib's own chip); within 2 px of a similarity of the ArcFace template.
DLIB_TEMPLATE_150 = np.array(
    [
        [47.1223, 45.4289],
        [101.5983, 45.4009],
        [74.1719, 77.2365],
        [50.1000, 105.0700],
        [98.2227, 105.1717],
    ],
    dtype=np.float32,
)
TEMPLATES = ("arcface", "dlib")


def arcface_template(size: int) -> np.ndarray:
    """The ArcFace 5-point template scaled to a ``size`` x ``size`` crop. Shape [5, 2]."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def face_template(name: str, size: int) -> np.ndarray:
    """The ``arcface`` (112) or ``dlib`` (150) template scaled to ``size``. Shape [5, 2]."""
    if name == "arcface":
        return arcface_template(size)
    if name == "dlib":
        return DLIB_TEMPLATE_150 * (size / 150.0)
    raise ValueError(f"unknown template {name!r}; choose from {TEMPLATES}")


@dataclass
class FaceSet:
    """Aligned faces with their landmarks and identity labels.

    images:    uint8 [N, H, W, 3] RGB (may be a numpy memmap)
    landmarks: float32 [N, 5, 2] pixel coordinates in the aligned image
    labels:    int64 [N] identity index in ``range(num_identities)``
    names:     optional identity names, ``names[label]``
    masked:    optional bool [N]: True for a photo of a face wearing a real mask (it has no
               clean twin, see :mod:`meer.data.dataset`); None means every face is unmasked
    source:    optional int64 [N]: which of several mixed training sources a row comes from
    """

    images: np.ndarray
    landmarks: np.ndarray
    labels: np.ndarray
    names: list[str] | None = None
    masked: np.ndarray | None = None
    source: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"landmarks must be [N, 5, 2] with N={n}, got {self.landmarks.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be [N] with N={n}, got {self.labels.shape}")
        for name in ("masked", "source"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"{name} must be [N] with N={n}, got {np.shape(value)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_identities(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def resized(self, size: int) -> FaceSet:
        """The same faces at ``size`` x ``size`` (area interpolation), landmarks scaled, in memory."""
        if size == self.size:
            return self
        import cv2

        images = np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_AREA) for im in self.images])
        scale = size / self.size
        return FaceSet(images, (self.landmarks * scale).astype(np.float32), self.labels, self.names, self.masked,
                       self.source)

    def subset(self, index: np.ndarray) -> FaceSet:
        """Rows ``index``; labels are kept as they are (not renumbered)."""
        masked = None if self.masked is None else self.masked[index]
        source = None if self.source is None else self.source[index]
        return FaceSet(self.images[index], self.landmarks[index], self.labels[index], self.names, masked, source)

    @property
    def real_masked(self) -> np.ndarray:
        """bool [N]: the rows that are photos of real masks (all False when ``masked`` is None)."""
        return np.zeros(len(self), bool) if self.masked is None else np.asarray(self.masked, bool)


def mix(sets: list[FaceSet]) -> FaceSet:
    """Several face sets as one: identities kept apart (labels offset, each name prefixed with
    its set's position, ``"1:Name"``), ``source`` = the position of each row's set.

    All sets must have the same image size. Images are copied into memory.
    """
    if not sets:
        raise ValueError("mix needs at least one face set")
    sizes = {s.size for s in sets}
    if len(sizes) > 1:
        raise ValueError(f"face sets of different sizes cannot be mixed: {sorted(sizes)}")
    labels, names, offset = [], [], 0
    for i, faces in enumerate(sets):
        labels.append(faces.labels + offset)
        count = faces.num_identities
        own = faces.names if faces.names is not None else [str(k) for k in range(count)]
        names += [f"{i}:{name}" for name in own[:count]]
        offset += count
    return FaceSet(
        images=np.concatenate([np.asarray(s.images) for s in sets]),
        landmarks=np.concatenate([s.landmarks for s in sets]).astype(np.float32),
        labels=np.concatenate(labels).astype(np.int64),
        names=names,
        masked=np.concatenate([s.real_masked for s in sets]),
        source=np.concatenate([np.full(len(s), i, np.int64) for i, s in enumerate(sets)]),
    )
