"""`meer verify / unmask / embed / enroll / identify`: outputs for scripts, and one-line errors
with exit code 2 for the usual mistakes."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from meer.api import Gallery, load_embeddings
from meer.cli import main

from .apikit import detectable, face_model, photo, tiny_run, truncated_jpeg, write


@pytest.fixture(autouse=True)
def _one_thread():
    # one image at a time through a 32 px model: extra threads only add synchronisation
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(tiny_run(tmp_path_factory))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two people with two photos each, and a few bad files."""
    faces = detectable(face_model(tmp_path_factory), 4)
    root = tmp_path_factory.mktemp("photos")
    for person, (first, second) in {"ann": faces[:2], "bob": faces[2:]}.items():
        write(root / "people" / person / "1.png", photo(*first))
        write(root / "people" / person / "2.jpg", photo(*second))
    write(root / "blank.png", np.full((200, 200, 3), 120, np.uint8))
    (root / "notes.jpg").write_text("these are not pixels")
    (root / "cut.jpg").write_bytes(truncated_jpeg(photo(*faces[0])))
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_prints_the_decision_and_json(capsys, checkpoint, photos):
    a, b = photos / "people/ann/1.png", photos / "people/bob/1.png"
    code, out, _ = run(capsys, "verify", str(a), str(a), "-m", checkpoint)
    assert code == 0 and out.startswith("same person: score 1.0000 >= threshold 0.3000")
    assert "not calibrated" in out
    code, out, _ = run(capsys, "verify", str(a), str(b), "--checkpoint", checkpoint, "--json")
    result = json.loads(out)
    assert code == 0 and result["same"] == (result["score"] >= result["threshold"])
    assert result["calibrated"] is False and [f["num_faces"] for f in result["faces"]] == [1, 1]


def test_checkpoint_from_the_environment(capsys, checkpoint, photos, monkeypatch):
    monkeypatch.setenv("MEER_CHECKPOINT", checkpoint)
    a = str(photos / "people/ann/1.png")
    assert run(capsys, "verify", a, a)[0] == 0


def test_unmask_writes_the_restored_face(capsys, checkpoint, photos, tmp_path):
    out_file, occlusion = tmp_path / "out" / "restored.png", tmp_path / "occlusion.png"
    in_photo = tmp_path / "in-photo.jpg"
    code, out, _ = run(capsys, "unmask", str(photos / "people/ann/1.png"), "-o", str(out_file),
                       "--occlusion", str(occlusion), "--in-photo", str(in_photo), "-m", checkpoint, "--json")
    result = json.loads(out)
    assert code == 0 and result["output"] == str(out_file) and result["in_photo"] == str(in_photo)
    assert isinstance(result["mask_detected"], bool) and result["mask_type"]
    assert Image.open(out_file).size == (32, 32) and Image.open(occlusion).mode == "L"
    assert Image.open(in_photo).format == "JPEG" and Image.open(in_photo).size == (400, 320)


def test_unmask_no_flip_restores_once(capsys, checkpoint, photos, tmp_path, monkeypatch):
    import meer.api.model as api

    flips = []

    def recording(*args, **kwargs):
        flips.append(kwargs["flip"])
        return unmask_images(*args, **kwargs)

    unmask_images = api.unmask_images
    monkeypatch.setattr(api, "unmask_images", recording)
    image = str(photos / "people/ann/1.png")
    for flag in ([], ["--no-flip"]):
        assert run(capsys, "unmask", image, "-o", str(tmp_path / "out.png"), "-m", checkpoint, *flag)[0] == 0
    assert flips == [True, False]


def test_embed_a_folder_skips_photos_without_a_face(capsys, checkpoint, photos, tmp_path):
    out_file = tmp_path / "embeddings.safetensors"
    code, out, err = run(capsys, "embed", str(photos), "-o", str(out_file), "-m", checkpoint)
    assert code == 0 and "4 embeddings (32-d)" in out and "3 photos skipped" in out
    assert "blank.png: no face found" in err and "notes.jpg" in err and "cut.jpg" in err
    embeddings, metadata = load_embeddings(out_file)
    assert embeddings.shape == (4, 32)
    assert json.loads(metadata["paths"]) == ["people/ann/1.png", "people/ann/2.jpg", "people/bob/1.png", "people/bob/2.jpg"]


def test_enroll_then_identify(capsys, checkpoint, photos, tmp_path):
    gallery_file = tmp_path / "people.gallery"
    code, out, _ = run(capsys, "enroll", str(photos / "people"), "-o", str(gallery_file), "-m", checkpoint, "--json")
    assert code == 0 and json.loads(out)["people"] == {"ann": 2, "bob": 2}
    assert Gallery.load(gallery_file).names == ["ann", "bob"]
    code, out, _ = run(capsys, "identify", str(photos / "people/bob/2.jpg"), "--gallery", str(gallery_file),
                       "-m", checkpoint, "--json")
    result = json.loads(out)
    assert code == 0 and [m["name"] for m in result["matches"]][0] == "bob"
    assert result["identified"] in ("bob", None)
    code, out, _ = run(capsys, "identify", str(photos / "people/bob/2.jpg"), "-g", str(gallery_file), "-m", checkpoint)
    assert code == 0 and "  1. bob" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "{photos}/missing.jpg", "{photos}/people/ann/1.png"], "missing.jpg does not exist"),
        (["verify", "{photos}/notes.jpg", "{photos}/people/ann/1.png"], "notes.jpg is not an image"),
        (["verify", "{photos}/cut.jpg", "{photos}/people/ann/1.png"], "cut.jpg is corrupt or truncated"),
        (["verify", "{photos}/blank.png", "{photos}/people/ann/1.png"], "no face found in {photos}/blank.png"),
        (["unmask", "{photos}/blank.png", "-o", "{photos}/x.png"], "no face found"),
        (["unmask", "{photos}/people/ann/1.png", "-o", "{photos}/x.txt"], "unknown image suffix '.txt'"),
        (["unmask", "{photos}/people/ann/1.png", "-o", "{photos}/x.png", "--in-photo", "{photos}/y.png", "--aligned"],
         "--in-photo needs a photo, not an --aligned crop"),
        (["identify", "{photos}/people/ann/1.png", "-g", "{photos}/blank.png"], "not a meer embeddings file"),
        (["embed", "{photos}/nowhere", "-o", "{photos}/e.safetensors"], "nowhere does not exist"),
        (["enroll", "{photos}/blank.png", "-o", "{photos}/g.safetensors"], "blank.png is not a folder"),
        (["unmask", "{photos}/people/ann/1.png", "-o", "{photos}/x.png", "--device", "gpu"],
         "'gpu' is not a torch device (cpu, cuda, cuda:1, mps, ...)"),
        # no CUDA here; on a GPU machine: "this machine has 1 CUDA device(s)"
        (["verify", "{photos}/people/ann/1.png", "{photos}/people/ann/1.png", "--device", "cuda:99"], "device 'cuda:99': "),
        (["verify", "{photos}/people/ann/1.png", "{photos}/people/ann/1.png", "--device", "meta"],
         "device 'meta' holds no numbers: choose cpu, cuda or mps"),
        (["verify", "{photos}/people/ann/1.png", "{photos}/people/ann/1.png", "--device", "hpu"],
         "device 'hpu': not available here"),
        # outputs that cannot be written: named as given, not as the temporary file
        (["unmask", "{photos}/people/ann/1.png", "-o", "{photos}/notes.jpg/x.png"],
         "cannot write {photos}/notes.jpg/x.png: a file stands where a folder is needed"),
        (["embed", "{photos}/people", "-o", "{photos}/people"], "cannot write {photos}/people: it is a folder"),
        (["embed", "{photos}/people", "-o", "{photos}/blank.png"],
         "{photos}/blank.png exists and is not a meer embeddings or gallery file: not overwritten"),
        (["enroll", "{photos}/people", "-o", "{photos}/blank.png"], "blank.png exists and is not a meer embeddings"),
        (["embed", "{photos}/people", "-o", "{photos}/notes.jpg/e.safetensors"], "cannot write {photos}/notes.jpg/e"),
    ],
)
def test_bad_inputs_fail_with_one_line(capsys, checkpoint, photos, argv, message):
    argv = [a.format(photos=photos) for a in argv]
    code, out, err = run(capsys, *argv, "-m", checkpoint)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"meer {argv[0]}: error: ")
    assert message.format(photos=photos) in err


def test_when_no_photo_is_usable_each_reason_is_given(capsys, checkpoint, photos, tmp_path):
    (tmp_path / "nobody").mkdir()
    shutil.copy(photos / "blank.png", tmp_path / "nobody" / "blank.png")
    cases = [(["embed", str(photos / "blank.png"), str(photos / "notes.jpg"), "-o", str(tmp_path / "e.safetensors")],
              "none of the 2 photos had a usable face"),
             (["enroll", str(tmp_path), "-o", str(tmp_path / "people.db")], "nobody could be enrolled")]
    for argv, message in cases:
        code, out, err = run(capsys, *argv, "-m", checkpoint)
        *reasons, last = err.splitlines()
        assert code == 2 and out == "" and last.startswith(f"meer {argv[0]}: error: ") and message in last
        assert any("blank.png: no face found" in line for line in reasons)


@pytest.mark.parametrize("command", ["verify", "prepare"])
def test_an_unknown_detector_is_refused_before_anything_runs(capsys, photos, command):
    a = str(photos / "people/ann/1.png")
    argv = [command, a, a] if command == "verify" else [command, a, "-o", str(photos / "cache")]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--detector", "mtcnn,dlib"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "'mtcnn,dlib': choose auto, mtcnn, mediapipe, yunet" in err
    assert not (photos / "cache").exists()


@pytest.mark.parametrize(
    "checkpoint_arg, message",
    [
        ("{tmp}/nothing", "does not exist"),
        ("{tmp}", "is not a meer checkpoint"),
        (None, "no model given and this install has no default model: pass --checkpoint/-m"),
    ],
)
def test_wrong_checkpoint_fails_with_one_line(capsys, photos, tmp_path, monkeypatch, checkpoint_arg, message):
    monkeypatch.delenv("MEER_CHECKPOINT", raising=False)
    monkeypatch.setattr("meer.api.default_model", lambda: tmp_path / "no-default-model")
    a = str(photos / "people/ann/1.png")
    model = ["-m", checkpoint_arg.format(tmp=tmp_path)] if checkpoint_arg else []
    code, out, err = run(capsys, "verify", a, a, *model)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("meer verify: error: ") and message in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pairs", "{tmp}/pairs.txt"], "--lfw-cache and --pairs go together"),
        (["--synthetic", "--folds", "6-10"], "--folds selects LFW pairs: it needs --lfw-cache/--pairs"),
        (["--synthetic", "--calibrate-identification", "2"], "takes a false-accept rate between 0 and 1, got 2"),
        (["--masked-cache", "{tmp}/c", "--masked-root", "{tmp}/r", "--calibrate-identification", "0.01"],
         "--calibrate-identification needs a verification protocol"),
        (["--synthetic", "-o", "{tmp}/report.txt"], "a file stands there; the report is a folder"),
    ],
)
def test_eval_checks_its_arguments_before_it_runs(capsys, tmp_path, argv, message):
    (tmp_path / "report.txt").write_text("keep me")
    code, out, err = run(capsys, "eval", str(tmp_path / "no-such-checkpoint"), *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("meer eval: error: ") and message in err
    assert (tmp_path / "report.txt").read_text() == "keep me"


def test_prepare_takes_one_way_of_naming_the_masked_photos(capsys, photos, tmp_path):
    (tmp_path / "list.txt").write_text("ann/1.png\n")
    code, out, err = run(capsys, "prepare", str(photos / "people"), "-o", str(tmp_path / "cache"),
                         "--masked", "*_m.*", "--masked-list", str(tmp_path / "list.txt"))
    assert code == 2 and err == "meer prepare: error: --masked and --masked-list are two ways to name the masked photos: give one\n"
    assert not (tmp_path / "cache").exists()


def test_eval_scores_the_pairs_of_an_insightface_bin(capsys, checkpoint, tmp_path):
    import io
    import pickle

    from meer.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(10, 2, 32, seed=3).generate()
    rng = np.random.default_rng(0)
    order, issame = [], []
    for i in range(20):  # alternately the two photos of one person and photos of two people
        a, b = (2 * (i % 10), 2 * (i % 10) + 1) if i % 2 == 0 else tuple(rng.choice(10, 2, replace=False) * 2)
        order += [a, b]
        issame.append(i % 2 == 0)

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=95)
        return buffer.getvalue()

    (tmp_path / "tiny.bin").write_bytes(pickle.dumps(([jpeg(faces.images[k]) for k in order], issame), protocol=2))
    assert main(["prepare", str(tmp_path / "tiny.bin"), "-o", str(tmp_path / "tinybin"), "--size", "32", "--quiet"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "eval", checkpoint, "--bin-cache", str(tmp_path / "tinybin"), "-o", str(tmp_path / "ev"),
                       "--quiet", "--json")
    metrics = json.loads(out[out.index("{"):])
    assert code == 0 and metrics["verification"]["tinybin"]["U-U"]["num_pairs"] == 20
    # not a .bin: said so
    code, _, err = run(capsys, "eval", checkpoint, "--bin-cache", str(tmp_path / "ev"))
    assert code == 2 and err.count("\n") == 1
