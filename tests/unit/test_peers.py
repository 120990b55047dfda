import cv2
import numpy as np
import pytest

from bench.peers.dlib import DLIB_BOX_150, crop_box_in_photo, paste_back
from meer.data.align import align_face
from meer.data.faceset import face_template


def test_paste_back_puts_the_crop_mask_where_it_was_cut_and_nothing_else():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (200, 240, 3), dtype=np.uint8)
    landmarks = face_template("dlib", 150) * 0.8 + np.array([40.0, 30.0])
    crop, matrix, _ = align_face(photo, landmarks, 150, "dlib")
    occlusion = np.zeros((150, 150), np.uint8)
    occlusion[90:140, 30:120] = 1
    masked = crop.copy()
    masked[occlusion > 0] = (0, 200, 255)
    out = paste_back(photo, masked, occlusion, matrix)
    # outside the mask's footprint the photo is untouched, bit for bit
    footprint = cv2.warpAffine(occlusion.astype(np.float32), matrix, (240, 200), flags=cv2.WARP_INVERSE_MAP) > 0
    footprint = cv2.dilate(footprint.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    np.testing.assert_array_equal(out[~footprint], photo[~footprint])
    # cutting the crop again from the pasted photo shows the mask where it was drawn
    again = cv2.warpAffine(out, matrix, (150, 150), flags=cv2.INTER_LINEAR)
    inner = np.zeros_like(occlusion, bool)
    inner[95:135, 35:115] = True
    assert np.abs(again[inner].astype(int) - [0, 200, 255]).max() <= 2
    assert footprint.sum() < 0.25 * footprint.size


def test_fallback_box_is_dlibs_usual_box_mapped_into_the_photo():
    photo_shape = (300, 300, 3)
    scale, shift = 2.0, np.array([10.0, 20.0])
    matrix = np.array([[1 / scale, 0, -shift[0] / scale], [0, 1 / scale, -shift[1] / scale]])  # photo -> crop
    box = crop_box_in_photo(matrix, 150, photo_shape)
    expected = np.array(DLIB_BOX_150) * scale + np.tile(shift, 2)
    np.testing.assert_allclose(box, np.clip(expected, 0, 299).astype(int), atol=1)


def test_dlib_pipeline_explains_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("no dlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    from bench.peers.dlib import DlibPipeline

    with pytest.raises(ImportError, match=r"meer\[peers\]"):
        DlibPipeline()
