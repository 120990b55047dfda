"""Quality of MEER's mask removal (docs/design.md, Protocols): PSNR / SSIM inside the occluded
region, and how well the restored face keeps the identity of the clean one.

Pixels outside the occlusion are copied from the input by the generator's compositing, so
whole-image scores would be inflated by them; every pixel metric here is restricted to the
region.

Image convention: numpy, channels last — one image ``[H, W, C]`` or a batch ``[N, H, W, C]`` —
either float in [0, 1] or uint8 (divided by 255). Regions are ``[H, W]`` / ``[N, H, W]``;
a pixel is inside where the region is ``>= 0.5`` (bool, 0/1, or a probability map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from meer.eval.verification import l2_normalise


@dataclass
class SynthesisResult:
    """Means over the images whose region is not empty.

    ``psnr`` in dB, ``ssim`` in [-1, 1], ``identity_similarity`` the mean cosine between
    embeddings of restored and clean faces (same images). ``num_skipped`` counts images with
    an empty region (e.g. unmasked faces); all means are NaN when no image is left.
    """

    psnr: float
    ssim: float
    identity_similarity: float
    num_images: int
    num_skipped: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "psnr": float(self.psnr),
            "ssim": float(self.ssim),
            "identity_similarity": float(self.identity_similarity),
            "num_images": self.num_images,
            "num_skipped": self.num_skipped,
        }


def region_psnr(restored: np.ndarray, clean: np.ndarray, region: np.ndarray) -> float | np.ndarray:
    """PSNR (dB, peak 1.0) from the mean squared error over the region's pixels and channels.

    ``restored`` / ``clean`` ``[H, W, C]`` or ``[N, H, W, C]``; ``region`` ``[H, W]`` or
    ``[N, H, W]``. Returns a float for one image, float ``[N]`` for a batch; NaN where the
    region is empty, ``inf`` where the region is restored exactly.
    """
    restored, clean, region, single = _prepare(restored, clean, region)
    psnr = np.full(len(restored), np.nan)
    for i in np.flatnonzero(region.any(axis=(1, 2))):
        mse = np.mean((_to_unit(restored[i]) - _to_unit(clean[i]))[region[i]] ** 2)
        with np.errstate(divide="ignore"):
            psnr[i] = -10.0 * np.log10(mse)  # peak 1.0; inf when mse == 0
    return float(psnr[0]) if single else psnr


def region_ssim(restored: np.ndarray, clean: np.ndarray, region: np.ndarray) -> float | np.ndarray:
    """SSIM averaged over the region's pixels and channels.

    The per-pixel SSIM map is skimage's ``structural_similarity(..., full=True)`` with the
    settings of Wang et al. 2004 (Gaussian window, sigma 1.5, population covariance),
    computed on the whole image so windows at the region's border see real context, then
    averaged inside the region only. Shapes and return as in :func:`region_psnr`; images
    must be at least 11x11 (the Gaussian window). NaN where the region is empty.
    """
    restored, clean, region, single = _prepare(restored, clean, region)
    ssim = np.full(len(restored), np.nan)
    for i in np.flatnonzero(region.any(axis=(1, 2))):
        _, ssim_map = structural_similarity(
            _to_unit(clean[i]),
            _to_unit(restored[i]),
            data_range=1.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            full=True,
        )
        ssim[i] = ssim_map[region[i]].mean()
    return float(ssim[0]) if single else ssim


def identity_similarity(emb_restored: np.ndarray, emb_clean: np.ndarray) -> float:
    """Mean cosine similarity between matching rows of ``[N, D]`` embeddings."""
    emb_restored = l2_normalise(emb_restored)
    emb_clean = l2_normalise(emb_clean)
    if emb_restored.shape != emb_clean.shape:
        raise ValueError(f"embedding shapes differ: {emb_restored.shape} vs {emb_clean.shape}")
    return float(np.einsum("nd,nd->n", emb_restored, emb_clean).mean())


def evaluate_restorations(
    restored: np.ndarray,
    clean: np.ndarray,
    region: np.ndarray,
    emb_restored: np.ndarray,
    emb_clean: np.ndarray,
) -> SynthesisResult:
    """Region PSNR / SSIM and identity similarity of a batch of restorations.

    ``restored`` / ``clean`` ``[N, H, W, C]``, ``region`` ``[N, H, W]`` (the true occlusion),
    embeddings ``[N, D]`` of the restored and clean faces. Images with an empty region are
    skipped by all three metrics (an unmasked face passes through unchanged and would only
    inflate them) and counted in ``num_skipped``.
    """
    if np.ndim(restored) != 4:
        raise ValueError(f"expected a batch [N, H, W, C], got shape {np.shape(restored)}")
    psnr = region_psnr(restored, clean, region)
    ssim = region_ssim(restored, clean, region)
    kept = ~np.isnan(psnr)
    if len(emb_restored) != len(kept) or len(emb_clean) != len(kept):
        raise ValueError(f"need one embedding per image ({len(kept)}); got {len(emb_restored)} and {len(emb_clean)}")
    num_images = int(kept.sum())
    if num_images == 0:
        return SynthesisResult(np.nan, np.nan, np.nan, 0, len(kept))
    return SynthesisResult(
        psnr=float(psnr[kept].mean()),
        ssim=float(ssim[kept].mean()),
        identity_similarity=identity_similarity(np.asarray(emb_restored)[kept], np.asarray(emb_clean)[kept]),
        num_images=num_images,
        num_skipped=len(kept) - num_images,
    )


def _prepare(
    restored: np.ndarray, clean: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Images as batches ``[N, H, W, C]`` (dtype kept: converting image by image bounds the
    memory), bool region ``[N, H, W]``, and whether the input was a single image."""
    restored, clean, region = np.asarray(restored), np.asarray(clean), np.asarray(region)
    if restored.shape != clean.shape:
        raise ValueError(f"restored and clean shapes differ: {restored.shape} vs {clean.shape}")
    if restored.ndim not in (3, 4) or restored.shape[-1] not in (1, 3):
        raise ValueError(f"expected channels-last [H, W, C] or [N, H, W, C] with C in (1, 3), got {restored.shape}")
    if region.shape != restored.shape[:-1]:
        raise ValueError(f"region must have shape {restored.shape[:-1]}, got {region.shape}")
    single = restored.ndim == 3
    if single:
        restored, clean, region = restored[None], clean[None], region[None]
    return restored, clean, region >= 0.5, single


def _to_unit(images: np.ndarray) -> np.ndarray:
    """Float64 in [0, 1] from uint8 (divided by 255) or float images."""
    if images.dtype == np.uint8:
        return images.astype(np.float64) / 255.0
    return images.astype(np.float64)


def boundary_band(region: np.ndarray, width: int = 3) -> np.ndarray:
    """bool ``[H, W]``: the pixels within ``width`` pixels (chessboard distance) of the edge of
    ``region`` (``[H, W]``, inside where ``>= 0.5``), on both sides of it: where a composite's seam
    or a leftover mask outline would show. Empty when the region is empty or fills the image."""
    inside = (np.asarray(region) >= 0.5).astype(np.uint8)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(inside, kernel) != cv2.erode(inside, kernel)


def boundary_excess(restored: np.ndarray, clean: np.ndarray, region: np.ndarray, width: int = 3) -> float | np.ndarray:
    """Boundary artefacts: the mean excess of the restored face's gradient magnitude over the
    clean face's, ``max(0, |grad restored| - |grad clean|)``, on the band of :func:`boundary_band`.

    A seam, a colour jump or a mask outline left at the region's edge adds gradient the clean face
    does not have there; a restoration that continues the face adds none. Gradients are Sobel
    (3x3, divided by 8 so a step from 0 to 1 gives 0.5 at most) of the luma in [0, 1], so the
    value is in luma units per pixel; x255 for grey levels. Shapes and return as in
    :func:`region_psnr`; NaN where the band is empty.
    """
    restored, clean, region, single = _prepare(restored, clean, region)
    excess = np.full(len(restored), np.nan)
    for i in range(len(restored)):
        band = boundary_band(region[i], width)
        if band.any():
            gap = _gradient_magnitude(restored[i]) - _gradient_magnitude(clean[i])
            excess[i] = np.maximum(gap[band], 0.0).mean()
    return float(excess[0]) if single else excess


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude ``[H, W]`` of the luma (Rec. 601) of an ``[H, W, C]`` image."""
    unit = _to_unit(image)
    luma = unit[..., 0] if unit.shape[-1] == 1 else unit @ np.array([0.299, 0.587, 0.114])
    gx = cv2.Sobel(luma, cv2.CV_64F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(luma, cv2.CV_64F, 0, 1, ksize=3) / 8.0
    return np.hypot(gx, gy)


def telea_inpaint(images: np.ndarray, regions: np.ndarray, radius: int = 3) -> np.ndarray:
    """Classical inpainting (Telea 2004, OpenCV's ``cv2.inpaint``) of each uint8 image
    ``[N, H, W, 3]`` inside its region ``[N, H, W]`` (inside where ``>= 0.5``): the floor a
    learned restoration has to beat. Returns uint8 ``[N, H, W, 3]``."""
    images, regions = np.asarray(images), np.asarray(regions)
    if images.ndim != 4 or images.dtype != np.uint8 or regions.shape != images.shape[:3]:
        raise ValueError(f"expected uint8 images [N, H, W, 3] and regions [N, H, W], got {images.shape} and {regions.shape}")
    out = np.empty_like(images)
    for i in range(len(images)):
        out[i] = cv2.inpaint(np.ascontiguousarray(images[i]), (regions[i] >= 0.5).astype(np.uint8), radius,
                             cv2.INPAINT_TELEA)
    return out
