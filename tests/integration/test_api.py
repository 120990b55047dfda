"""`meer.load` end to end: photos in (detection + alignment inside), decisions, restorations,
galleries and the documented input rules."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import meer
from meer.api import FALLBACK_THRESHOLD, Gallery, load_embeddings, load_image, save_embeddings
from meer.calibration import Calibration, write_calibration
from meer.data.masks import MASK_TYPES
from meer.inference.checkpoint import find_checkpoint

from .apikit import canvas, detectable, encode, face_model, photo, tiny_run, truncated_jpeg, write


@pytest.fixture(autouse=True)
def _one_thread():
    # one image at a time through a 32 px model: extra threads only add synchronisation
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return face_model(tmp_path_factory)


@pytest.fixture(scope="module")
def faces(model):
    return detectable(model, 4)


def test_import_meer_is_light_and_exports_the_api():
    code = "import sys, meer; assert 'torch' not in sys.modules and 'numpy' not in sys.modules; print(meer.load.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "meer.api.model"
    assert issubclass(meer.NoFaceError, ValueError) and issubclass(meer.CorruptImageError, meer.ImageError)
    with pytest.raises(AttributeError):
        meer.no_such_name  # noqa: B018


def test_verify_detects_aligns_and_decides_at_the_fallback_threshold(model, faces):
    (i, s), (j, t) = faces[0], faces[2]
    result = model.verify(photo(i, s), photo(j, t))
    assert -1.0 <= result.score <= 1.0
    assert result.threshold == FALLBACK_THRESHOLD and result.calibrated is False
    assert result.same == (result.score >= result.threshold)
    for face in result.faces:
        assert face.aligned.shape == (32, 32, 3) and face.aligned.dtype == np.uint8
        assert face.num_faces == 1 and face.score > 0.5
        x1, y1, x2, y2 = face.box  # the face was pasted at x 120-280, y 80-240
        assert 100 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 260
    same = model.verify(photo(i, s), photo(i, s))
    assert same.score == pytest.approx(1.0, abs=1e-5) and same.same


def test_calibrated_checkpoint_decides_at_its_threshold(model, faces, tmp_path):
    folder = shutil.copytree(model.checkpoint, tmp_path / "step")
    write_calibration(folder, Calibration(threshold=0.999, protocol="test"))
    calibrated = meer.load(folder)
    result = calibrated.verify(photo(*faces[0]), photo(*faces[1]))
    assert result.calibrated and result.threshold == 0.999
    assert result.same == (result.score >= 0.999)


def test_verify_and_identify_take_the_threshold_of_the_mask_setting(model, faces, tmp_path):
    from meer.gallery import identification_threshold, identify_photo, open_gallery

    folder = shutil.copytree(model.checkpoint, tmp_path / "step")
    thresholds = {"U-U": 0.11, "M-U": 0.22, "M-M": 0.33}
    write_calibration(folder, Calibration(0.22, "test", setting="M-U", thresholds=thresholds,
                                          accuracies={s: 1.0 for s in thresholds}))
    calibrated = meer.load(folder)
    masked, unmasked, other = (photo(*face) for face in faces[:3])
    # set the mask head so that the classifier, run on the faces, calls the first one masked
    # (class 1) and the other two unmasked (class 0)
    network = calibrated.network
    crops = np.stack([calibrated.face(p).aligned for p in (masked, unmasked, other)])
    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        pooled = network(x).decoupled.mask.mean((2, 3))  # [3, C], what the mask head reads
        design = torch.cat([pooled, torch.ones(3, 1)], 1).double()
        solution = torch.linalg.lstsq(design, torch.tensor([[4.0], [-4.0], [-4.0]]).double()).solution[:, 0].float()
        head = network.decouple.mask_head
        head.weight.zero_()
        head.bias.fill_(-100.0)
        head.weight[1], head.bias[1], head.bias[0] = solution[:-1], solution[-1], 0.0
    assert calibrated.mask_verdicts([masked, unmasked, other]) == [True, False, False]

    mixed = calibrated.verify(masked, unmasked)
    assert (mixed.setting, mixed.threshold, mixed.masked) == ("M-U", 0.22, (True, False))
    assert mixed.same == (mixed.score >= 0.22) and mixed.calibrated
    plain = calibrated.verify(unmasked, other)
    assert (plain.setting, plain.threshold, plain.masked) == ("U-U", 0.11, (False, False))
    assert plain.same == (plain.score >= 0.11)
    both = calibrated.verify(masked, masked)
    assert (both.setting, both.threshold, both.same) == ("M-M", 0.33, True)

    # open-set identification without its own threshold: the probe's verdict picks M-U or U-U
    assert identification_threshold(calibrated, True) == (0.22, False)
    assert identification_threshold(calibrated, False) == (0.11, False)
    with open_gallery(tmp_path / "people.db", calibrated) as gallery:
        gallery.enroll("bob", calibrated.embed(unmasked), [False], ["bob.png"])
        assert identify_photo(gallery, calibrated, masked).threshold == 0.22
        assert identify_photo(gallery, calibrated, other).threshold == 0.11

    # a network without a mask classifier cannot tell: M-U for every pair
    network.decouple, network.generator = None, None
    blind = calibrated.verify(unmasked, other)
    assert (blind.setting, blind.threshold, blind.masked) == ("M-U", 0.22, (None, None))


def test_every_input_kind_gives_the_same_embedding(model, faces, tmp_path):
    pixels = photo(*faces[0])
    path = write(tmp_path / "face.png", pixels)
    inputs = [pixels, path, str(path), encode(pixels), Image.fromarray(pixels), model.face(pixels)]
    embeddings = model.embed(inputs)
    assert embeddings.shape == (len(inputs), model.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, np.broadcast_to(embeddings[0], embeddings.shape), atol=1e-5)
    assert model.embed(pixels).shape == (1, model.embedding_dim)


def test_grey_and_rgba_arrays_are_converted():
    assert load_image(np.zeros((5, 7), np.uint8)).shape == (5, 7, 3)
    assert load_image(np.zeros((5, 7, 4), np.uint8)).shape == (5, 7, 3)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((5, 7, 3), np.float32))
    with pytest.raises(meer.ImageTooLargeError, match="5x7 pixels"):  # arrays are held to the limit too
        load_image(np.zeros((7, 5, 3), np.uint8), max_pixels=30)


def test_a_16_bit_grey_photo_keeps_its_greys(tmp_path):
    grey = np.linspace(0, 255, 12 * 10).reshape(12, 10).round().astype(np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # Pillow opens it as I;16
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), np.repeat(grey[..., None], 3, axis=2))


def test_pre_aligned_crops_skip_detection(model):
    crop = canvas((0, 0, 0, 0, 112), size=(112, 112))
    face = model.face(crop, aligned=True)
    assert face.aligned.shape == (32, 32, 3) and face.box is None
    assert model.embed([crop, crop], aligned=True).shape == (2, model.embedding_dim)


def test_several_faces_use_the_main_one(model, faces):
    (i, s), (j, t) = faces[0], faces[1]
    # a big face in the middle, a small one in a corner
    group = canvas((i, s, 120, 80, 160), (j, t, 10, 10, 90))
    face = model.face(group)
    assert face.num_faces == 2
    x1, y1, x2, y2 = face.box
    assert x2 - x1 > 80 and (x1 + x2) / 2 > 150


def test_bad_inputs_raise_clear_errors(model, tmp_path):
    with pytest.raises(meer.NoFaceError, match="no face"):
        model.face(np.full((240, 240, 3), 128, np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.face(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(meer.NotAnImageError, match="notes.jpg is not an image"):
        model.face(tmp_path / "notes.jpg")
    (tmp_path / "cut.jpg").write_bytes(truncated_jpeg(photo(0, 0)))
    with pytest.raises(meer.CorruptImageError, match="corrupt or truncated"):
        model.face(tmp_path / "cut.jpg")
    with pytest.raises(meer.ImageTooLargeError, match="megapixels"):
        model.face(encode(photo(0, 0)), max_pixels=1000)
    with pytest.raises(IsADirectoryError):
        model.face(tmp_path)


def test_unmask_restores_only_the_predicted_mask_region(model, faces):
    result = model.unmask(photo(*faces[1]))
    assert result.restored.shape == result.aligned.shape == (32, 32, 3)
    assert result.restored.dtype == np.uint8
    assert result.occlusion.shape == (32, 32) and 0 <= result.occlusion.min() <= result.occlusion.max() <= 1
    assert result.mask_type in MASK_TYPES and result.mask_detected == (result.mask_type != "none")
    kept = result.occlusion <= model.network.occlusion_threshold
    np.testing.assert_array_equal(result.restored[kept], result.aligned[kept])


def test_enroll_identify_and_gallery_round_trip(model, faces, tmp_path):
    people = {"ann": [photo(*faces[0])], "bob": [photo(*faces[1]), photo(*faces[2])]}
    gallery = model.enroll(people)
    assert gallery.names == ["ann", "bob"] and gallery.counts == [1, 2]
    np.testing.assert_allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, atol=1e-5)

    loaded = Gallery.load(gallery.save(tmp_path / "people.gallery"))
    assert loaded.names == gallery.names and loaded.counts == gallery.counts and loaded.model == gallery.model
    np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)

    matches = model.identify(photo(*faces[0]), loaded, top_k=5)
    assert [m.name for m in matches][0] == "ann" and len(matches) == 2
    assert matches[0].score == pytest.approx(1.0, abs=1e-5) and matches[0].score >= matches[1].score
    name, score = matches[1]  # a Match unpacks like a (name, score) pair
    assert name == "bob"

    foreign = Gallery(loaded.names, loaded.embeddings, loaded.counts, model="0" * 16)
    with pytest.raises(ValueError, match="another model"):
        model.identify(photo(*faces[0]), foreign)

    # a person may be given one photo; a gallery database answers identify too, by best template
    from meer.gallery import enroll_photos, open_gallery

    assert model.enroll({"ann": photo(*faces[0])}).counts == [1]
    store = open_gallery(tmp_path / "people.db", model)
    enroll_photos(store, model, "ann", Image.fromarray(photo(*faces[0])))  # one PIL image
    enroll_photos(store, model, "bob", [photo(*faces[1]), photo(*faces[2])])
    for gallery_like in (store, tmp_path / "people.db"):
        best = model.identify(photo(*faces[0]), gallery_like)
        assert [m.name for m in best] == ["ann", "bob"] and best[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(TypeError, match="people: a folder or a mapping"):
        model.enroll([photo(*faces[0])])
    with pytest.raises(TypeError, match="gallery: a Gallery, a GalleryStore or the path of one"):
        model.identify(photo(*faces[0]), None)


def test_enroll_a_folder_skips_unusable_photos_when_asked(model, faces, tmp_path):
    write(tmp_path / "ann" / "1.png", photo(*faces[0]))
    write(tmp_path / "ann" / "blank.png", np.full((200, 200, 3), 90, np.uint8))
    write(tmp_path / "bob" / "1.jpg", photo(*faces[1]))
    with pytest.raises(meer.NoFaceError):
        model.enroll(tmp_path)
    gallery = model.enroll(tmp_path, skip_errors=True)
    assert gallery.names == ["ann", "bob"] and gallery.counts == [1, 1]
    assert [Path(source).name for source, _ in gallery.skipped] == ["blank.png"]
    # a missing file is skipped like a photo without a face
    gallery = model.enroll({"ann": [tmp_path / "ann" / "1.png", tmp_path / "gone.jpg"]}, skip_errors=True)
    assert gallery.counts == [1] and [Path(source).name for source, _ in gallery.skipped] == ["gone.jpg"]


def test_embeddings_file_round_trip_and_foreign_files(tmp_path):
    embeddings = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    save_embeddings(tmp_path / "e.safetensors", embeddings, {"paths": "[]"})
    loaded, metadata = load_embeddings(tmp_path / "e.safetensors")
    np.testing.assert_array_equal(loaded, embeddings)
    assert metadata["paths"] == "[]"
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="not a meer embeddings file"):
        load_embeddings(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="not a meer gallery"):
        Gallery.load(tmp_path / "e.safetensors")


def test_wrong_checkpoints_are_reported(tmp_path, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        meer.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not a meer checkpoint"):
        meer.load(tmp_path)
    assert find_checkpoint(tiny_run(tmp_path_factory)).name.startswith("step_")


def test_detector_none_takes_only_aligned_crops(tmp_path_factory):
    model = meer.load(tiny_run(tmp_path_factory), detector=None)
    assert model.embed(canvas((0, 0, 0, 0, 112), size=(112, 112)), aligned=True).shape[0] == 1
    with pytest.raises(ValueError, match="aligned=True"):
        model.face(photo(0, 0))
