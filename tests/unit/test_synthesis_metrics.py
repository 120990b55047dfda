"""Region PSNR / SSIM and identity similarity with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from meer.eval.synthesis import (
    boundary_band,
    boundary_excess,
    evaluate_restorations,
    identity_similarity,
    region_psnr,
    region_ssim,
    telea_inpaint,
)

SIZE = 32


def lower_half() -> np.ndarray:
    region = np.zeros((SIZE, SIZE), bool)
    region[SIZE // 2 :] = True
    return region


def test_psnr_of_known_mse_ignores_pixels_outside_the_region():
    clean = np.zeros((SIZE, SIZE, 3))
    restored = np.where(lower_half()[..., None], 0.1, 0.9).repeat(3, axis=-1)  # error 0.1 inside, 0.9 out
    assert region_psnr(restored, clean, lower_half()) == pytest.approx(20.0)  # MSE 0.01


def test_psnr_of_uint8_images_and_batches():
    clean = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    restored = np.full_like(clean, 51)  # 51 / 255 = 0.2, MSE 0.04
    region = np.stack([lower_half(), np.zeros((SIZE, SIZE), bool)])
    psnr = region_psnr(restored, clean, region)
    assert psnr[0] == pytest.approx(-10 * math.log10(0.04))
    assert math.isnan(psnr[1])  # empty region


def test_ssim_of_identical_images_is_one():
    image = np.random.default_rng(0).random((SIZE, SIZE, 3))
    assert region_ssim(image, image, lower_half()) == pytest.approx(1.0)


def test_ssim_is_restricted_to_the_region():
    rng = np.random.default_rng(0)
    clean = rng.random((SIZE, SIZE, 3))
    restored = clean.copy()
    restored[:8] = rng.random((8, SIZE, 3))  # damage rows far above the region's windows
    whole = structural_similarity(clean, restored, data_range=1.0, channel_axis=-1)
    assert whole < 0.9
    assert region_ssim(restored, clean, lower_half()) == pytest.approx(1.0)


def test_identity_similarity_is_mean_cosine():
    restored = np.array([[1.0, 0.0], [0.0, 3.0]])
    clean = np.array([[2.0, 0.0], [1.0, 1.0]])
    assert identity_similarity(restored, clean) == pytest.approx((1.0 + math.sqrt(0.5)) / 2)


def test_evaluate_restorations_skips_and_counts_empty_regions():
    rng = np.random.default_rng(0)
    clean = rng.random((3, SIZE, SIZE, 3))
    restored = clean.copy()
    restored[0][lower_half()] += 0.1  # MSE 0.01 inside: 20 dB
    region = np.stack([lower_half(), np.zeros((SIZE, SIZE), bool), lower_half()])
    restored[2] = clean[2] * 0.5  # would lower every mean if image 1 (empty region) counted instead
    emb_clean = np.eye(3)
    emb_restored = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])  # image 1 (skipped) mismatched
    result = evaluate_restorations(restored, clean, region, emb_restored, emb_clean)
    assert (result.num_images, result.num_skipped) == (2, 1)
    assert result.identity_similarity == pytest.approx(1.0)
    expected_psnr = (20.0 + region_psnr(restored[2], clean[2], lower_half())) / 2
    assert result.psnr == pytest.approx(expected_psnr)
    assert set(result.to_dict()) == {"psnr", "ssim", "identity_similarity", "num_images", "num_skipped"}


def test_evaluate_restorations_with_no_region_at_all():
    images = np.zeros((2, SIZE, SIZE, 3))
    result = evaluate_restorations(images, images, np.zeros((2, SIZE, SIZE)), np.eye(2), np.eye(2))
    assert (result.num_images, result.num_skipped) == (0, 2) and math.isnan(result.psnr)


def test_rejects_channels_first_images():
    image = np.zeros((3, SIZE, SIZE))
    with pytest.raises(ValueError, match="channels-last"):
        region_psnr(image, image, lower_half())


def _square(size: int = 24, lo: int = 6, hi: int = 18) -> np.ndarray:
    region = np.zeros((size, size), np.uint8)
    region[lo:hi, lo:hi] = 1
    return region


def test_boundary_band_is_a_ring_on_both_sides_of_the_edge():
    band = boundary_band(_square(), width=1)
    assert band.sum() == 14 * 14 - 10 * 10  # one pixel out, one pixel in
    assert band[5, 10] and band[6, 10] and not band[7, 10] and not band[4, 10]
    assert not boundary_band(np.ones((24, 24)), 2).any()  # no edge inside the image
    assert not boundary_band(np.zeros((24, 24)), 2).any()


def test_boundary_excess_sees_a_seam_but_not_a_smooth_continuation():
    clean = np.tile(np.linspace(60, 180, 24), (24, 1)).astype(np.uint8)[..., None].repeat(3, 2)
    region = _square()
    assert boundary_excess(clean, clean, region) == 0.0
    seam = clean.copy()
    seam[region.astype(bool)] = 250  # a flat fill with a jump at its edge
    assert boundary_excess(seam, clean, region) > 0.05
    # gradient the clean face has and the restoration lacks is not an artefact at the seam
    flat = np.full_like(clean, 120)
    assert boundary_excess(flat, clean, region) == 0.0
    assert np.isnan(boundary_excess(clean, clean, np.zeros((24, 24))))
    assert boundary_excess(np.stack([seam, clean]), np.stack([clean, clean]), np.stack([region, region])).tolist()[1] == 0.0


def test_telea_fills_the_region_from_its_surroundings_and_keeps_the_rest():
    clean = np.full((24, 24, 3), 90, np.uint8)
    masked = clean.copy()
    region = _square()
    masked[region.astype(bool)] = (250, 10, 10)
    out = telea_inpaint(masked[None], region[None])[0]
    assert np.abs(out.astype(int) - 90).max() <= 2
    outside = ~region.astype(bool)
    assert (out[outside] == masked[outside]).all()
    with pytest.raises(ValueError, match="uint8"):
        telea_inpaint(masked.astype(np.float32)[None], region[None])
