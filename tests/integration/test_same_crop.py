"""One road from photo to crop: ``meer prepare`` (the training and test caches) and the API
(and the service, which calls it) give the same aligned face, pixel for pixel, for the same
photo file, including a photo above the detection size cap with a face large enough to be
shrunk before the warp, and one whose EXIF tag says it is stored sideways."""

import numpy as np
import pytest
from PIL import Image

from meer.data.align import transform_points
from meer.data.cache import FaceCache
from meer.data.detect import DETECT_MAX_SIDE
from meer.data.prepare import prepare_dataset

from .apikit import canvas, detectable, face_model, photo, write

EXIF_ORIENTATION = 0x0112  # 6: the stored pixels are to be turned 90 degrees clockwise to show


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return face_model(tmp_path_factory)


@pytest.fixture(scope="module")
def photos(model, tmp_path_factory):
    """``{relative path: upright pixels}`` of three photos written under one folder."""
    root = tmp_path_factory.mktemp("same-crop")
    (i, s), (j, t), (k, u) = detectable(model, 3)
    upright = {
        "ann/plain.png": photo(i, s),
        "bob/large.jpg": canvas((j, t, 500, 300, 800), size=(1400, 1800)),
        "cat/sideways.png": photo(k, u),
    }
    write(root / "ann/plain.png", upright["ann/plain.png"])
    write(root / "bob/large.jpg", upright["bob/large.jpg"])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    sideways = np.ascontiguousarray(np.rot90(upright["cat/sideways.png"]))  # turned 90 degrees anticlockwise
    (root / "cat").mkdir()
    Image.fromarray(sideways).save(root / "cat/sideways.png", exif=exif)
    return root, upright


def test_prepare_and_the_api_give_the_same_crop(model, photos, tmp_path):
    root, upright = photos
    assert max(upright["bob/large.jpg"].shape) > DETECT_MAX_SIDE
    report = prepare_dataset(
        root, tmp_path / "cache", size=model.input_size, template=model.config.model.alignment,
        detector=model.detector.name, workers=1, progress=False,
    )
    assert (report.aligned, report.failed) == (3, 0)
    cache = FaceCache.open(tmp_path / "cache")
    for name in upright:
        served, row = model.face(root / name), cache.row(name)
        np.testing.assert_array_equal(cache.faces.images[row], served.aligned, err_msg=name)
        # the stored photo -> crop matrix takes the photo's landmarks to the crop's
        np.testing.assert_allclose(
            transform_points(served.landmarks, cache.matrices[row]), cache.faces.landmarks[row], atol=1e-3
        )
    # the EXIF orientation is applied: the sideways file gives the upright photo's crop
    sideways, turned_back = model.face(root / "cat/sideways.png"), model.face(upright["cat/sideways.png"])
    np.testing.assert_array_equal(sideways.aligned, turned_back.aligned)
