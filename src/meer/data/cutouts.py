"""Real masks cut out of photos, to be worn by other training faces.

A collection of real masked photos is small (rmfrd-train: 241 photos of 88 people), but the
masks in it are real: their shapes, fabrics, folds and shadows are what meer's drawn masks only
imitate. Cutting each mask out of its aligned photo and pasting it on the other aligned training
faces lets every identity of a large source (LFW) wear real masks, and, unlike the masked photo
itself, the pasted face keeps its clean twin and an exact occlusion map.

The cut follows a trained model's predicted occlusion (the decoupling module's map), kept as
its largest region, with the warp's black padding left out and the edge feathered::

    cutouts = cut_out(model, images_of_masked_photos)
    cutouts.save("runs/x/cutouts.safetensors")

Training pastes them with ``data.real_masks`` (see :class:`meer.data.dataset.MaskedFaces`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from meer.io import atomic_write

MIN_AREA, MAX_AREA = 0.1, 0.7  # share of the crop a usable cut-out covers
# how far ``augment`` moves a pasted cut-out: degrees turned, share scaled, share of the crop
# shifted, hue turned (OpenCV units, 180 a full turn), saturation scaled
MAX_TURN, MAX_SCALE, MAX_SHIFT, MAX_HUE, MAX_SATURATION = 10.0, 0.1, 0.03, 30, 0.3


@dataclass
class MaskCutouts:
    images: np.ndarray  # uint8 [N, S, S, 3]: the masked photos (aligned crops)
    alpha: np.ndarray  # uint8 [N, S, S]: 255 where the mask is, feathered at its edge
    augment: bool = False  # paste() also turns, scales, shifts and recolours each cut-out (training)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.alpha.shape != self.images.shape[:3] or not len(self.images):
            raise ValueError(f"mask cut-outs need images [N, S, S, 3] and alpha [N, S, S], got "
                             f"{self.images.shape} and {self.alpha.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def paste(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One randomly drawn cut-out (mirrored half the time, its brightness scaled by
        0.75-1.25 so that it does not bring its own photo's exposure; with ``augment``, also
        :func:`jitter`-ed) over an aligned face of the same framing. Returns (masked uint8
        [S, S, 3], occlusion uint8 [S, S], 1 = covered)."""
        i = int(rng.integers(len(self)))
        cut, alpha = self.images[i], self.alpha[i]
        if rng.random() < 0.5:
            cut, alpha = cut[:, ::-1], alpha[:, ::-1]
        size = image.shape[:2]
        if cut.shape[:2] != size:
            cut = cv2.resize(np.ascontiguousarray(cut), size[::-1], interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(np.ascontiguousarray(alpha), size[::-1], interpolation=cv2.INTER_LINEAR)
        if self.augment:
            cut, alpha = jitter(cut, alpha, rng)
        weight = alpha[..., None].astype(np.float32) / 255
        colour = cut.astype(np.float32) * rng.uniform(0.75, 1.25)
        masked = weight * colour + (1 - weight) * image.astype(np.float32)
        return np.clip(masked, 0, 255).round().astype(np.uint8), (alpha >= 128).astype(np.uint8)

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        tensors = {"images": np.ascontiguousarray(self.images), "alpha": np.ascontiguousarray(self.alpha)}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "meer-cutouts-1"}))

    @classmethod
    def load(cls, path: str | os.PathLike, augment: bool = False) -> MaskCutouts:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no mask cut-outs at {path} (write them with `meer cutouts`)")
        try:
            with safe_open(str(path), "numpy") as f:
                written_by_meer = (f.metadata() or {}).get("format") == "meer-cutouts-1"
        except Exception:  # safetensors raises its own error types on foreign files
            written_by_meer = False
        if not written_by_meer:
            raise ValueError(f"{path} is not a file of mask cut-outs written by meer (`meer cutouts`)")
        tensors = load_file(str(path))
        return cls(tensors["images"], tensors["alpha"], augment)


def jitter(cut: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cut-out (uint8 [S, S, 3] and its alpha [S, S]) worn at another angle, size, place and
    colour: turned and scaled about the mask's centre, shifted, its hue turned and its saturation
    scaled, each by a random amount up to the ``MAX_*`` above. The few real masks a collection
    has (165 in rmfrd-train's fit people) then come in more shapes and colours than it holds."""
    s = alpha.shape[0]
    ys, xs = np.nonzero(alpha)
    centre = (float(xs.mean()), float(ys.mean())) if len(xs) else (s / 2, s / 2)
    matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-MAX_TURN, MAX_TURN), 1 + rng.uniform(-MAX_SCALE, MAX_SCALE))
    matrix[:, 2] += rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * s
    cut = cv2.warpAffine(np.ascontiguousarray(cut), matrix, (s, s), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), matrix, (s, s), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha[alpha < 128] = 0  # the cut stays feathered inwards only: no tint outside the region it marks
    hsv = cv2.cvtColor(cut, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-MAX_HUE, MAX_HUE + 1)) % 180
    hsv[..., 1] *= rng.uniform(1 - MAX_SATURATION, 1 + MAX_SATURATION)
    cut = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return cut, alpha


def mask_region(probability: np.ndarray, image: np.ndarray, threshold: float = 0.5, feather: float = 1.0) -> np.ndarray | None:
    """The alpha (uint8 [S, S]) of the mask in one aligned photo from its predicted occlusion
    probability [S, S]: the largest region above ``threshold``, holes filled, the black padding
    of the alignment warp (pure black connected to the border) left out, the edge blurred by
    ``feather`` px. None when the region is implausibly small or large for a mask."""
    region = (probability > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
    if count < 2:
        return None
    region = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(region, contours, -1, 1, thickness=cv2.FILLED)
    region[padding(image)] = 0
    if not MIN_AREA <= region.mean() <= MAX_AREA:
        return None
    alpha = region.astype(np.float32)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather) * region  # fade inwards, never onto the face
    return (alpha * 255).round().astype(np.uint8)


def padding(image: np.ndarray) -> np.ndarray:
    """bool [S, S]: the pure-black pixels connected to the border (where the warp left the photo)."""
    black = (image.max(axis=-1) == 0).astype(np.uint8)
    count, labels = cv2.connectedComponents(black, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    return np.isin(labels, border) if len(border) else np.zeros(black.shape, bool)


def cut_out(model, images: np.ndarray, threshold: float = 0.5, feather: float = 1.0, batch_size: int = 32) -> MaskCutouts:
    """Cut the masks out of aligned photos of masked faces (uint8 [N, S, S, 3]) along ``model``'s
    predicted occlusion (a MEER model with the decoupling module, on the same framing). Photos
    whose region is implausible for a mask are skipped; ValueError if none is left."""
    import torch

    from meer.data.dataset import to_tensor

    kept_images, kept_alpha = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = np.asarray(images[start : start + batch_size])
            encoded = model(to_tensor(chunk))
            probability = model.occlusion_probability(encoded, chunk.shape[1])[:, 0].float().numpy()
            for image, p in zip(chunk, probability):
                alpha = mask_region(p, image, threshold, feather)
                if alpha is not None:
                    kept_images.append(image)
                    kept_alpha.append(alpha)
    if not kept_images:
        raise ValueError(f"no mask could be cut out of {len(images)} photos")
    return MaskCutouts(np.stack(kept_images), np.stack(kept_alpha))
