import json

import cv2
import numpy as np
import pytest

import meer.data.detect as detect
import meer.data.prepare as prepare_module
from meer.cli import main
from meer.data.cache import CacheWriter, FaceCache
from meer.data.detect import Detection
from meer.data.faceset import arcface_template
from meer.data.prepare import prepare_dataset
from tests.unit.facefiles import jpeg, write_insightface_rec


class FakeDetector:
    """Finds a template-shaped face in any image that is not black."""

    name = "fake"

    def detect(self, image):
        if image.max() < 10:
            return []
        side = min(image.shape[:2])
        return [Detection(np.array([0, 0, side, side], np.float32), 0.99, arcface_template(side))]


@pytest.fixture
def fake_detector(monkeypatch):
    monkeypatch.setattr(prepare_module, "_resolve_detector", lambda name: "fake")
    monkeypatch.setattr(detect, "create_detector", lambda name: FakeDetector())


def photo(value: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(value)
    image = rng.integers(20, 255, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def make_folder(root, people=3, per_person=4):
    for p in range(people):
        (root / f"person{p}").mkdir(parents=True)
        for i in range(per_person):
            (root / f"person{p}" / f"img_{i:04d}.png").write_bytes(photo(10 * p + i))
    return root


def test_folder_with_bad_files_counts_failures(tmp_path, fake_detector):
    source = make_folder(tmp_path / "src")
    (source / "person0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (source / "person1" / "notes.txt").write_text("not an image")
    (source / "person2" / "dark.png").write_bytes(cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1].tobytes())

    report = prepare_dataset(source, tmp_path / "out", size=64, workers=1, progress=False)
    assert (report.items, report.aligned, report.failed) == (15, 12, 3)
    reasons = {f["path"]: f["reason"] for f in report.failures}
    assert "decode" in reasons["person0/broken.jpg"]
    assert "not an image file" in reasons["person1/notes.txt"]
    assert reasons["person2/dark.png"] == "no face detected"

    cache = FaceCache.open(tmp_path / "out")
    assert cache.faces.images.shape == (12, 64, 64, 3) and isinstance(cache.faces.images, np.memmap)
    assert cache.faces.names == ["person0", "person1", "person2"]
    assert cache.faces.labels[cache.row("person2/img_0003.png")] == 2
    np.testing.assert_allclose(cache.faces.landmarks[0], arcface_template(64), atol=1e-3)
    with pytest.raises(KeyError, match="decode"):
        cache.row("person0/broken.jpg")
    assert list(cache.rows(["person1/img_0000.png", "nope.jpg"])) == [4, -1]


def test_frame_fallback_is_flagged(tmp_path, fake_detector):
    source = make_folder(tmp_path / "src", people=1, per_person=2)
    (source / "person0" / "dark.png").write_bytes(cv2.imencode(".png", np.zeros((80, 60, 3), np.uint8))[1].tobytes())
    report = prepare_dataset(source, tmp_path / "out", size=32, no_face="frame", workers=1, progress=False)
    assert (report.aligned, report.detected, report.fallback, report.failed) == (3, 2, 1, 0)
    cache = FaceCache.open(tmp_path / "out")
    assert cache.fallback[cache.row("person0/dark.png")] and cache.fallback.sum() == 1


@pytest.mark.parametrize("kind", ["empty", "missing", "unknown"])
def test_bad_sources_write_nothing(tmp_path, kind, capsys):
    source = tmp_path / "src"
    if kind == "empty":
        source.mkdir()
    elif kind == "unknown":
        source = tmp_path / "data.csv"
        source.write_text("x")
    out = tmp_path / "out"
    assert main(["prepare", str(source), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meer prepare: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_foreign_output_folder_is_refused(tmp_path):
    write_insightface_rec(tmp_path, [0, 1])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a meer cache"):
        prepare_dataset(tmp_path, tmp_path / "out", progress=False, workers=1)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_recordio_to_cache_and_settings_mismatch(tmp_path):
    write_insightface_rec(tmp_path, [0, 0, 1, 1, 1])
    report = prepare_dataset(tmp_path, tmp_path / "out", size=56, progress=False, workers=1)
    assert (report.aligned, report.identities, report.failed) == (5, 2, 0)
    assert "5/5 aligned (pre-aligned source, resized)" in report.summary()  # nothing was detected
    cache = FaceCache.open(tmp_path / "out")
    assert cache.faces.images.shape == (5, 56, 56, 3)
    assert cache.paths[0] == "train.rec:1" and list(cache.faces.labels) == [0, 0, 1, 1, 1]
    # a second run with the same settings finds the cache finished
    again = prepare_dataset(tmp_path, tmp_path / "out", size=56, progress=False, workers=1)
    assert again.aligned == 5
    with pytest.raises(ValueError, match="size"):
        prepare_dataset(tmp_path, tmp_path / "out", size=64, progress=False, workers=1)
    prepare_dataset(tmp_path, tmp_path / "out", size=64, resume=False, progress=False, workers=1)
    assert FaceCache.open(tmp_path / "out").faces.size == 64


def test_verification_bin_keeps_pairs(tmp_path):
    import pickle

    (tmp_path / "lfw.bin").write_bytes(pickle.dumps(([jpeg(v) for v in range(6)], [True, False, True])))
    prepare_dataset(tmp_path / "lfw.bin", tmp_path / "out", progress=False, workers=1)
    cache = FaceCache.open(tmp_path / "out")
    assert list(cache.issame) == [True, False, True] and cache.paths[5] == "lfw.bin:5"


def test_resume_after_interruption(tmp_path, fake_detector, monkeypatch):
    source = make_folder(tmp_path / "src", people=4, per_person=5)
    (source / "person3" / "broken.jpg").write_bytes(b"junk")
    fresh = prepare_dataset(source, tmp_path / "fresh", size=48, workers=1, progress=False, chunk_size=6)

    commit = CacheWriter.commit
    calls = {"n": 0}

    def dying_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            # the process dies after writing part of a chunk's data but before committing it
            with open(self.path / "images.u8", "ab") as handle:
                handle.write(b"\x07" * 1000)
            raise KeyboardInterrupt
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(source, tmp_path / "out", size=48, workers=1, progress=False, chunk_size=6)
    with pytest.raises(ValueError, match="unfinished run"):
        FaceCache.open(tmp_path / "out")
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["items_done"] == 12

    monkeypatch.setattr(CacheWriter, "commit", commit)
    resumed = prepare_dataset(source, tmp_path / "out", size=48, workers=1, progress=False, chunk_size=6)
    assert resumed.resumed_at == 12
    assert (resumed.aligned, resumed.failed) == (fresh.aligned, fresh.failed) == (20, 1)
    a, b = FaceCache.open(tmp_path / "fresh"), FaceCache.open(tmp_path / "out")
    assert a.paths == b.paths and a.manifest["failures"] == b.manifest["failures"]
    np.testing.assert_array_equal(np.asarray(a.faces.images), np.asarray(b.faces.images))
    np.testing.assert_array_equal(a.faces.labels, b.faces.labels)
    assert not (tmp_path / "out" / "progress.json").exists()


def test_parallel_workers_match_single_process(tmp_path):
    write_insightface_rec(tmp_path, list(range(6)))
    one = prepare_dataset(tmp_path, tmp_path / "one", progress=False, workers=1, chunk_size=4)
    two = prepare_dataset(tmp_path, tmp_path / "two", progress=False, workers=2, chunk_size=4)
    assert one.aligned == two.aligned == 6
    np.testing.assert_array_equal(
        np.asarray(FaceCache.open(tmp_path / "one").faces.images),
        np.asarray(FaceCache.open(tmp_path / "two").faces.images),
    )


@pytest.mark.parametrize("template", ["arcface", "dlib"])
def test_cache_keeps_the_matrix_from_each_photo_to_its_crop(tmp_path, fake_detector, template):
    source = make_folder(tmp_path / "src", people=2, per_person=2)
    prepare_dataset(source, tmp_path / "out", size=64, template=template, workers=1, progress=False)
    cache = FaceCache.open(tmp_path / "out")
    assert cache.template == template and cache.matrices.shape == (4, 2, 3)
    for row, key in enumerate(cache.paths):
        original = cv2.cvtColor(cv2.imread(str(source / key)), cv2.COLOR_BGR2RGB)
        again = cv2.warpAffine(original, cache.matrices[row], (64, 64), flags=cv2.INTER_LINEAR, borderValue=0)
        np.testing.assert_array_equal(again, cache.faces.images[row])


def test_unknown_template_is_refused(tmp_path, fake_detector):
    with pytest.raises(ValueError, match="template must be one of"):
        prepare_dataset(make_folder(tmp_path / "src"), tmp_path / "out", template="vgg", workers=1)


def test_training_refuses_a_cache_with_another_alignment(tmp_path, fake_detector):
    from meer.config import load_config
    from meer.train.trainer import load_faces

    prepare_dataset(make_folder(tmp_path / "src"), tmp_path / "out", size=48, template="dlib", workers=1, progress=False)
    cfg = load_config("tiny", [f"data.source={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match="aligned to the dlib template but this model reads arcface"):
        load_faces(cfg)
    cfg = load_config("tiny", [f"data.source={tmp_path / 'out'}", "model.template=dlib"])
    assert load_faces(cfg).size == 48
