"""What the API's methods return: an aligned :class:`Face`, a :class:`VerifyResult`, an
:class:`UnmaskResult` and the :class:`Match` es of an identification."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image

from meer.data.align import crop_scale, inpaint, mask_beyond_crop, paste_back
from meer.data.photos import load_image


@dataclass
class Face:
    """A face ready for the network.

    aligned:   uint8 [S, S, 3] RGB crop, aligned to the ArcFace template at the model's size
    box:       float32 [4] x1, y1, x2, y2 in the photo; None for a pre-aligned input
    landmarks: float32 [5, 2] eyes, nose tip, mouth corners in the photo; None if pre-aligned
    score:     detector confidence; None if pre-aligned
    num_faces: faces found in the photo (the main one is this one); 1 if pre-aligned
    source:    the file name, when the input was a path (for messages)
    matrix:    float64 [2, 3] the alignment, photo -> crop; None if pre-aligned
    photo_size: (width, height) of the photo it was found in; None if pre-aligned
    """

    aligned: np.ndarray
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    score: float | None = None
    num_faces: int = 1
    source: str | None = None
    matrix: np.ndarray | None = field(default=None, repr=False)
    photo_size: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        """JSON-ready description (without the pixels)."""
        return {
            "box": None if self.box is None else [round(float(v), 1) for v in self.box],
            "landmarks": None if self.landmarks is None else [[round(float(v), 1) for v in p] for p in self.landmarks],
            "detection_score": None if self.score is None else round(float(self.score), 4),
            "num_faces": self.num_faces,
        }


ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | Face


def photo_list(images) -> list:
    """``images`` as a list of single inputs: a list or tuple is many photos, an array ``[N, H, W, 3]``
    a batch of them; anything else (a path, bytes, a PIL image, one array, a Face) is one photo."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]


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

    restored:      uint8 [S, S, 3] the aligned crop with the predicted mask region repainted; the
                   aligned crop unchanged when no mask was detected
    occlusion:     float32 [S, S] predicted probability that a pixel is covered by a mask
    mask_detected: the mask classifier's verdict (any class but "none")
    mask_type:     its class name ("none", "surgical", "n95", "cloth", ...): the kind of meer's drawn
                   masks the mask looks most like: a guess (the shipped model names the right one of the
                   three for about 7 in 10 validation faces with drawn masks, where it tells masked
                   from bare for all)
    aligned:       uint8 [S, S, 3] the crop the network saw
    face:          the detection it came from
    region:        float32 [S, S] the weight of the generated pixels in ``restored`` (0 where it is
                   ``aligned``'s own; all 0 when no mask was detected)
    """

    restored: np.ndarray = field(repr=False)
    occlusion: np.ndarray = field(repr=False)
    mask_detected: bool
    mask_type: str
    aligned: np.ndarray = field(repr=False)
    face: Face = field(repr=False)
    region: np.ndarray = field(repr=False)

    def in_photo(self, photo: str | os.PathLike | bytes | Image.Image | np.ndarray, beyond_crop: bool = True) -> np.ndarray:
        """The photo the face was found in (what was given to ``unmask``), uint8 ``[H, W, 3]``, with
        the repainted region warped back into it. The restoration is made at the model's input size,
        so on a large face it comes back soft.

        The crop ends at the chin and the ears, so with ``beyond_crop`` the parts of the mask next to
        the region that it misses (the strip under the chin, ear loops; :func:`mask_beyond_crop`)
        are filled from their surroundings by OpenCV's Telea inpainting. Every other pixel is the
        photo's."""
        if self.face.matrix is None:
            raise ValueError("the face was given aligned: there is no photo to put the restoration back into")
        photo = load_image(photo)
        if self.face.photo_size is not None and photo.shape[1::-1] != tuple(self.face.photo_size):
            width, height = self.face.photo_size
            raise ValueError(f"in_photo needs the photo the face was found in ({width}x{height} px), "
                             f"not one of {photo.shape[1]}x{photo.shape[0]}")
        # restored = weight * generated + (1 - weight) * aligned: the first term goes back
        generated = self.restored - (1 - self.region[..., None]) * self.aligned
        pasted = paste_back(photo, generated, self.region, self.face.matrix)
        if not beyond_crop or not self.region.any():
            return pasted
        beyond = mask_beyond_crop(photo, self.region, self.occlusion, self.face.matrix)
        return inpaint(pasted, beyond, crop_scale(self.face.matrix))


class Match(NamedTuple):
    """One gallery identity and its similarity to the probe."""

    name: str
    score: float
