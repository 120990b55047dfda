"""Real masks cut out of masked photos and pasted on other faces (meer.data.cutouts)."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from meer.cli import main
from meer.data.cutouts import MaskCutouts, cut_out, mask_region, padding
from meer.data.dataset import MaskedFaces, mask_renderer
from meer.data.masks import REAL_MASK
from meer.data.synthetic import SyntheticFaces
from tests.unit.test_prepare import fake_detector  # noqa: F401  (fixture)
from tests.unit.test_real_mask_data import rmfrd_like

S = 48


def blob(top: int, bottom: int, left: int, right: int, value: float = 0.9) -> np.ndarray:
    p = np.full((S, S), 0.1, np.float32)
    p[top:bottom, left:right] = value
    return p


def test_the_cut_is_the_largest_region_with_its_holes_filled_and_no_padding():
    image = np.full((S, S, 3), 120, np.uint8)
    image[:, :3] = 0  # the warp's black border on the left
    image[30, 20] = 0  # a black pixel inside the mask is not padding
    p = blob(24, 44, 0, 40)
    p[30:34, 16:20] = 0.2  # a hole in the mask
    p[2:5, 2:5] = 0.9  # a small second region
    alpha = mask_region(p, image, feather=0)
    covered = alpha == 255
    assert covered[30:34, 16:20].all() and covered[30, 20]
    assert not covered[2:5, 2:5].any() and not covered[:, :3].any()
    assert covered.sum() == 20 * 37 and set(np.unique(alpha)) == {0, 255}
    soft = mask_region(p, image, feather=1.5)
    assert (soft[~covered] == 0).all() and 0 < soft[24, 20] < 255 and soft[34, 20] == 255


def test_implausible_regions_are_not_masks():
    image = np.full((S, S, 3), 120, np.uint8)
    assert mask_region(np.zeros((S, S), np.float32), image) is None
    assert mask_region(blob(40, 44, 20, 24), image) is None  # a speck
    assert mask_region(blob(0, S, 0, S), image) is None  # the whole face


def test_padding_is_black_touching_the_border_only():
    image = np.full((8, 8, 3), 50, np.uint8)
    image[0, :] = 0
    image[4, 4] = 0
    assert padding(image)[0].all() and padding(image).sum() == 8


def cutouts() -> MaskCutouts:
    images = np.zeros((2, S, S, 3), np.uint8)
    images[0, ..., 0] = 200  # red mask
    images[1, ..., 2] = 200  # blue mask
    alpha = np.zeros((2, S, S), np.uint8)
    alpha[:, 28:, 10:30] = 255
    alpha[:, 27, 10:30] = 100  # the feathered edge
    return MaskCutouts(images, alpha)


def test_paste_covers_exactly_the_cut_and_leaves_the_face():
    face = np.full((S, S, 3), 90, np.uint8)
    seen_flipped = False
    for seed in range(12):
        masked, occlusion = cutouts().paste(face, np.random.default_rng(seed))
        covered = occlusion.astype(bool)
        seen_flipped |= covered[30, 30:38].all()  # mirrored: columns 18-37
        assert covered.sum() == 20 * 20 and not covered[27].any()
        assert (masked[~covered & (np.arange(S)[:, None] != 27)] == 90).all()
        inside = masked[covered]
        assert (inside.max(axis=1) >= 150).all() and (inside.min(axis=1) == 0).all()  # a tinted mask
        assert ((masked[27] != 90).any(axis=1)).sum() == 20  # the soft edge blends
    assert seen_flipped
    small, occlusion = cutouts().paste(np.full((24, 24, 3), 90, np.uint8), np.random.default_rng(0))
    assert small.shape == (24, 24, 3) and occlusion.sum() == pytest.approx(100, abs=12)


def test_augmented_paste_moves_and_recolours_the_mask_and_its_region_alike():
    face = np.full((S, S, 3), 90, np.uint8)
    plain = cutouts()
    moved = dataclasses.replace(plain, augment=True)
    regions, hues = set(), set()
    for seed in range(12):
        masked, occlusion = moved.paste(face, np.random.default_rng(seed))
        covered = occlusion.astype(bool)
        assert 0.81 * 400 * 0.9 <= covered.sum() <= 1.21 * 400 * 1.1  # scaled by 0.9-1.1 at most
        changed = (masked != 90).any(axis=-1)
        assert np.array_equal(changed, covered)  # nothing tinted outside the region
        regions.add(covered.tobytes())
        hue = cv2.cvtColor(masked[covered][None], cv2.COLOR_RGB2HSV)[0, :, 0]
        hues.add(int(np.median(hue)) // 10)
    assert len(regions) == 12 and len(hues) >= 4  # turned, scaled, shifted; of other colours
    for seed in range(4):  # the same draw without augment: the cut exactly where its photo had it
        still = plain.paste(face, np.random.default_rng(seed))[1].astype(bool)
        assert still.sum() == 400 and still[28:, 10:30].all() != still[28:, 18:38].all()
        assert not np.array_equal(still, moved.paste(face, np.random.default_rng(seed))[1].astype(bool))


def test_cutouts_round_trip_and_refuse_other_files(tmp_path):
    path = cutouts().save(tmp_path / "c.safetensors")
    back = MaskCutouts.load(path)
    assert np.array_equal(back.images, cutouts().images) and np.array_equal(back.alpha, cutouts().alpha)
    assert not back.augment and MaskCutouts.load(path, augment=True).augment
    from safetensors.numpy import save_file

    save_file({"images": back.images}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a file of mask cut-outs"):
        MaskCutouts.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="meer cutouts"):
        MaskCutouts.load(tmp_path / "none.safetensors")
    (tmp_path / "sheet.png").write_bytes(b"\x89PNG\r\n\x1a\n not safetensors at all")
    with pytest.raises(ValueError, match="not a file of mask cut-outs"):  # not a safetensors file
        MaskCutouts.load(tmp_path / "sheet.png")
    with pytest.raises(ValueError, match="alpha"):
        MaskCutouts(back.images, back.alpha[:, :10])


class Stub:
    """Predicts the lower half as occluded, except for photos whose mean is dark (no mask)."""

    def eval(self):
        return self

    def __call__(self, x):
        return x

    def occlusion_probability(self, x, size):
        p = torch.zeros(len(x), 1, size, size)
        p[:, :, size // 2 :] = 0.9
        p[x.mean(dim=(1, 2, 3)) < -0.5] = 0.0
        return p


def test_cut_out_keeps_the_photos_with_a_plausible_mask():
    images = np.full((5, S, S, 3), 150, np.uint8)
    images[2] = 10
    cut = cut_out(Stub(), images, batch_size=2)
    assert len(cut) == 4 and (cut.alpha[:, S // 2 + 3 :] >= 250).all() and (cut.alpha[:, : S // 2] == 0).all()
    with pytest.raises(ValueError, match="no mask could be cut out of 1 photos"):
        cut_out(Stub(), images[2:3])


def test_a_share_of_the_drawn_masks_is_a_pasted_real_one():
    faces = SyntheticFaces(num_identities=4, images_per_identity=4, size=S, seed=2).generate()
    renderer = mask_renderer(["surgical"])
    drawn = MaskedFaces(faces, renderer, mask_prob=1.0, seed=0)
    pasted = MaskedFaces(faces, renderer, mask_prob=1.0, seed=0, cutouts=cutouts(), cutout_share=0.5)
    kinds = [pasted[i]["mask_type"].item() for i in range(len(faces) * 4)]
    assert set(kinds) == {1, REAL_MASK} and 0.3 < kinds.count(REAL_MASK) / len(kinds) < 0.7
    real = pasted[kinds.index(REAL_MASK)]
    assert real["twin"].item() == 1.0 and real["occlusion"].sum() == 400
    assert not real["masked"].equal(real["clean"])
    unchanged = MaskedFaces(faces, renderer, mask_prob=1.0, seed=0, cutouts=cutouts(), cutout_share=0.0)
    assert all(unchanged[i]["masked"].equal(drawn[i]["masked"]) for i in range(8))  # share 0: the old stream
    with pytest.raises(ValueError, match="needs mask cut-outs"):
        MaskedFaces(faces, renderer, cutout_share=0.5)


def test_the_command_refuses_a_cache_without_masked_photos(tmp_path, fake_detector, capsys):  # noqa: F811
    source = rmfrd_like(tmp_path / "src")
    assert main(["prepare", str(source), "-o", str(tmp_path / "bare"), "--size", "48", "--workers", "1", "--quiet",
                 "--masked", ""]) == 0
    assert main(["cutouts", str(tmp_path / "bare"), "-o", str(tmp_path / "c.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "flags no real masked photo" in err and len(err.splitlines()) == 1
    assert main(["prepare", str(source), "-o", str(tmp_path / "small"), "--size", "48", "--workers", "1",
                 "--quiet"]) == 0
    assert main(["cutouts", str(tmp_path / "small"), "-o", str(tmp_path / "c.safetensors")]) == 2
    assert "takes 112 px faces, the cache holds 48 px crops" in capsys.readouterr().err
    assert main(["cutouts", str(tmp_path / "small"), "-o", str(tmp_path / "c.safetensors"), "--threshold", "1.5"]) == 2
    assert "--threshold must lie between 0 and 1" in capsys.readouterr().err
    assert main(["cutouts", str(tmp_path / "small"), "-o", str(tmp_path / "c.safetensors"), "--validation",
                 str(tmp_path / "v.safetensors"), "--validation-share", "1"]) == 2
    assert "--validation-share must lie between 0 and 1" in capsys.readouterr().err
    assert main(["prepare", str(source), "-o", str(tmp_path / "one"), "--size", "112", "--workers", "1", "--quiet",
                 "--masked", "masked_01*"]) == 0  # person a's photo only
    assert main(["cutouts", str(tmp_path / "one"), "-o", str(tmp_path / "c.safetensors"), "--validation",
                 str(tmp_path / "v.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "masked photos are of one person, so none can be held out" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "v.safetensors").exists()


def test_validation_cutouts_come_from_other_people():
    from meer.cli.cutouts import held_out_people

    labels = np.repeat(np.arange(20), 3)[::-1]
    held = held_out_people(labels, 0.25)
    assert len(np.unique(labels[held])) == 5 and not set(labels[held]) & set(labels[~held])
    assert np.array_equal(held, held_out_people(labels, 0.25))  # the same people on every run
    assert not np.array_equal(held, held_out_people(labels, 0.25, seed=1))
    assert held_out_people(np.array([4, 4, 9]), 0.01).sum() in (1, 2)  # one person of two, never none
    assert held_out_people(np.array([4, 4, 9]), 0.99).sum() in (1, 2)  # never all
    assert not held_out_people(np.array([3, 3]), 0.5).any()  # one person: nobody to hold out (the command refuses)


def test_faces_of_another_size_get_the_cut_resized():
    faces = SyntheticFaces(num_identities=2, images_per_identity=2, size=32, seed=1).generate()
    sample = MaskedFaces(faces, mask_renderer(["n95"]), 1.0, seed=1, cutouts=cutouts(), cutout_share=1.0)[0]
    assert sample["mask_type"].item() == REAL_MASK and sample["masked"].shape[-1] == 32


def test_the_share_of_pasted_masks_is_a_fraction():
    from meer.config import DataConfig

    with pytest.raises(ValueError, match="real_mask_share"):
        DataConfig(real_mask_share=1.5)


def test_test_faces_wear_the_same_real_mask_on_every_run():
    from meer.data.masks import MASK_CLASSES
    from meer.eval.masked_copies import paste_real_masks

    faces = SyntheticFaces(2, 3, S, seed=0).generate()
    alpha = np.zeros((3, S, S), np.uint8)
    for i, top in enumerate((20, 26, 32)):  # three cut-outs of different heights
        alpha[i, top:, 8:40] = 255
    cutouts = MaskCutouts(np.full((3, S, S, 3), 30, np.uint8), alpha)
    first, again = paste_real_masks(faces, cutouts, seed=7), paste_real_masks(faces, cutouts, seed=7)
    np.testing.assert_array_equal(first.images, again.images)
    assert (first.mask_type == MASK_CLASSES.index("real")).all()
    tops = {int(np.flatnonzero(o.any(1))[0]) for o in first.occlusion}
    assert tops <= {20, 26, 32} and len(tops) > 1  # drawn per face, not one for all
    for image, occlusion, clean in zip(first.images, first.occlusion, np.asarray(faces.images)):
        np.testing.assert_array_equal(image[occlusion == 0], clean[occlusion == 0])
        assert (image[occlusion == 1] != clean[occlusion == 1]).any()
    assert not np.array_equal(paste_real_masks(faces, cutouts, seed=8).occlusion, first.occlusion)
