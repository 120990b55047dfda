"""What `meer.load` does that the first API tests left unchecked: photos larger than the detection
size, EXIF orientation, the flip option, "different people" at a calibrated threshold, a
restoration that really repaints, and `meer eval --calibrate` producing the threshold the API
decides with."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import meer
from meer.api import DETECT_MAX_SIDE, load_image
from meer.calibration import Calibration, read_calibration, write_calibration
from meer.data.dataset import to_tensor, to_uint8

from .apikit import canvas, detectable, face_model, photo, tiny_run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The session's tiny model, with the faces its detector finds looked up once."""
    shared = face_model(tmp_path_factory)
    detectable(shared, 3)
    return shared


@pytest.fixture
def faces(model):
    return detectable(model, 3)


def centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_a_photo_over_the_detection_size_gets_coordinates_in_its_own_pixels(model, faces):
    small = model.face(photo(*faces[0]))  # 160 px face at x 120, y 80 of a 400 px wide photo
    large_photo = canvas((*faces[0], 1500, 600, 480), size=(1300, 2200))  # 3x the face, far from the origin
    assert max(large_photo.shape) > DETECT_MAX_SIDE
    large = model.face(large_photo)
    offset_small, offset_large = np.array([120, 80]), np.array([1500, 600])
    expected = (centre(small.box) - offset_small) * 3 + offset_large
    np.testing.assert_allclose(centre(large.box), expected, atol=25)
    assert (large.box[2] - large.box[0]) / (small.box[2] - small.box[0]) == pytest.approx(3, rel=0.1)
    np.testing.assert_allclose(large.landmarks, (small.landmarks - offset_small) * 3 + offset_large, atol=25)
    # the crop is the same face, framed the same way
    assert np.abs(large.aligned.astype(int) - small.aligned.astype(int)).mean() < 20


def exif_rotated(pixels: np.ndarray) -> bytes:
    """A JPEG whose pixels are stored sideways with the EXIF tag that turns them upright
    (orientation 6: rotate 90 degrees clockwise to display), as phones write portraits."""
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied(model, faces, tmp_path):
    upright = photo(*faces[0])
    data = exif_rotated(upright)
    assert Image.open(io.BytesIO(data)).size == (upright.shape[0], upright.shape[1])  # stored sideways
    path = tmp_path / "portrait.jpg"
    path.write_bytes(data)
    for source in (data, path, Image.open(path)):
        pixels = load_image(source)
        assert pixels.shape == upright.shape
        assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3
    face = model.face(data)
    np.testing.assert_allclose(centre(face.box), centre(model.face(upright).box), atol=6)


def test_flip_adds_the_mirrored_face(model, tmp_path_factory):
    crop = canvas((5, 1, 0, 0, 112), size=(112, 112))
    flipped_model = meer.load(tiny_run(tmp_path_factory), flip=True)
    with_flip = flipped_model.embed(crop, aligned=True)[0]
    plain = model.embed(crop, aligned=True)[0]
    x = to_tensor(model.face(crop, aligned=True).aligned[None])
    network = flipped_model.network
    with torch.no_grad():
        expected = F.normalize(network(x).embedding + network(torch.flip(x, dims=[3])).embedding)[0]
        unflipped = F.normalize(network(x).embedding)[0]
    np.testing.assert_allclose(with_flip, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(plain, unflipped.numpy(), atol=1e-5)
    assert np.abs(with_flip - plain).max() > 1e-3


def test_different_people_at_a_calibrated_threshold(model, faces, tmp_path):
    first, second = photo(*faces[0]), photo(*faces[1])
    score = model.verify(first, second).score
    assert score < 0.99
    folder = shutil.copytree(model.checkpoint, tmp_path / "step")
    for threshold, same in [((score + 1) / 2, False), (score - 0.01, True)]:
        write_calibration(folder, Calibration(threshold=threshold, protocol="test"))
        calibrated = meer.load(folder)
        result = calibrated.verify(first, second)
        assert result.calibrated and result.threshold == threshold
        assert result.score == pytest.approx(score, abs=1e-6)
        assert result.same is same
        assert calibrated.verify(first, first).same is True


def test_unmask_repaints_the_predicted_region_with_the_generator(model, faces, tmp_path_factory):
    repainting = meer.load(tiny_run(tmp_path_factory))
    # only a face the classifier finds masked is repainted: make it find one
    bias = repainting.network.decouple.mask_head.bias
    bias.data.zero_()
    bias.data[1] = 1e4
    # the hard region (the grown, feathered one is checked in tests/models/test_models.py)
    repainting.network.blend_dilate = repainting.network.blend_feather = 0
    first = repainting.unmask(photo(*faces[1]))
    # the briefly trained network predicts weak occlusion everywhere; lower the cut so that
    # about half the face counts as masked
    repainting.network.occlusion_threshold = float(np.quantile(first.occlusion, 0.5))
    result = repainting.unmask(photo(*faces[1]))
    region = result.occlusion > repainting.network.occlusion_threshold
    assert 0.3 < region.mean() < 0.7
    np.testing.assert_array_equal(result.restored[~region], result.aligned[~region])
    repainted = (result.restored[region] != result.aligned[region]).any(axis=1)
    assert repainted.mean() > 0.5, "the region was not repainted"
    with torch.no_grad():
        expected = to_uint8(repainting.network.unmask(to_tensor(result.aligned[None]), flip=True).restored)[0]
    np.testing.assert_array_equal(result.restored, expected)


def test_eval_calibrate_stores_the_pooled_threshold_the_api_uses(tmp_path, tmp_path_factory, monkeypatch, capsys):
    import meer.demo
    from meer.cli import main
    from meer.data.synthetic import SyntheticFaces
    from meer.eval.masked_copies import render_test_masks
    from meer.eval.pairs import make_pairs
    from meer.eval.verification import best_threshold, cosine_scores
    from meer.inference.batched import embed_images

    small = meer.demo.DemoSettings(test_identities=12, test_images_per_identity=4, folds=2, pairs_per_fold=20)
    monkeypatch.setattr(meer.demo, "DemoSettings", lambda: small)
    folder = shutil.copytree(meer.load(tiny_run(tmp_path_factory)).checkpoint, tmp_path / "step")
    assert main(["eval", str(folder), "--synthetic", "--calibrate", "M-U", "-o", str(tmp_path / "eval"),
                 "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "eval" / "summary.md").read_text().startswith("# meer eval: step\n")  # the model evaluated
    stored = read_calibration(folder)
    assert stored.setting == "M-U" and stored.protocol == "synthetic M-U"
    assert f"calibrated threshold {stored.threshold:.4f}" in out
    assert json.loads(out[out.index("{"):])["verification"]["synthetic"]["M-U"]["num_pairs"] == 80

    # the same pairs scored here: clean first face, masked second face, best accuracy over all pairs
    loaded = meer.load(folder)
    cfg = loaded.config
    test_faces = SyntheticFaces(12, 4, cfg.model.input_size, cfg.data.synthetic_seed + meer.demo.TEST_SEED_OFFSET).generate()
    pairs = make_pairs(test_faces.labels, 2, 20, seed=12345)
    masked = render_test_masks(test_faces, 12345, tuple(cfg.data.mask_types))
    clean = embed_images(loaded.network, np.asarray(test_faces.images))
    covered = embed_images(loaded.network, masked.images)
    threshold, accuracy = best_threshold(cosine_scores(clean[pairs.first], covered[pairs.second]), pairs.same)
    assert stored.threshold == pytest.approx(threshold, abs=1e-6) and stored.accuracy == pytest.approx(accuracy)
    assert loaded.calibrated and loaded.threshold == stored.threshold
