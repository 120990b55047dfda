"""`meer enroll -o people.db`, `meer identify -g people.db` and `meer gallery`: the gallery
database from the command line, and one-line errors that leave it as it was."""

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

from meer.gallery import GalleryStore

from .apikit import write
from .test_cli import _one_thread, checkpoint, photos, run  # noqa: F401  (fixtures)


def names(capsys, db):
    code, out, _ = run(capsys, "gallery", str(db), "list", "--json")
    assert code == 0
    return {p["name"]: p["templates"] for p in json.loads(out)["people"]}


def test_enrol_identify_list_rename_delete(capsys, checkpoint, photos, tmp_path):  # noqa: F811
    db = tmp_path / "people.db"
    code, out, _ = run(capsys, "enroll", str(photos / "people"), "-o", str(db), "-m", checkpoint, "--json")
    assert code == 0 and json.loads(out)["people"]["ann"]["templates"] == 2 and names(capsys, db) == {"ann": 2, "bob": 2}
    # enrolling the folder again changes no one and says so
    code, _, err = run(capsys, "enroll", str(photos / "people"), "-o", str(db), "-m", checkpoint)
    assert code == 0 and "'ann' is already enrolled" in err and names(capsys, db) == {"ann": 2, "bob": 2}

    code, out, _ = run(capsys, "identify", str(photos / "people/bob/2.jpg"), "-g", str(db), "-m", checkpoint, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["identified"] == "bob" and answer["score"] == pytest.approx(1, abs=1e-5)
    code, out, _ = run(capsys, "identify", str(photos / "people/bob/2.jpg"), "-g", str(db), "-m", checkpoint)
    assert code == 0 and out.startswith("identified: bob (score 1.0000") and "not calibrated for identification" in out

    code, out, _ = run(capsys, "gallery", str(db), "add", "carl", str(photos / "people/ann/1.png"), "-m", checkpoint,
                       "--masked", "true")
    assert code == 0 and out.startswith("enrolled carl: 1 templates (1 masked)")
    code, out, _ = run(capsys, "gallery", str(db), "rename", "carl", "Carl Ray")
    assert code == 0 and names(capsys, db) == {"ann": 2, "bob": 2, "Carl Ray": 1}
    code, out, _ = run(capsys, "gallery", str(db), "delete", "bob")
    assert code == 0 and out.strip() == "deleted bob and 2 templates" and "bob" not in names(capsys, db)


def corrupt(db):
    db.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000)


def other_model(db):
    GalleryStore(db, "0123456789abcdef", 32).close()


@pytest.mark.parametrize(
    "argv, message, prepare",
    [
        (["identify", "{photos}/people/ann/1.png", "-g", "{db}", "-m", "{ckpt}"], "another model", other_model),
        (["identify", "{photos}/people/ann/1.png", "-g", "{db}", "-m", "{ckpt}"], "not a meer gallery database", corrupt),
        (["identify", "{photos}/people/ann/1.png", "-g", "{tmp}/missing.db", "-m", "{ckpt}"], "missing.db does not exist", None),
        (["gallery", "{db}", "list"], "not a meer gallery database", corrupt),
        (["gallery", "{db}", "add", "ann", "{photos}/people/bob/1.png", "-m", "{ckpt}"], "'ann' is already enrolled", None),
        (["gallery", "{db}", "add", "zoe", "{photos}/people/bob/1.png", "{photos}/blank.png", "-m", "{ckpt}"], "no face found", None),
        (["gallery", "{db}", "add", "zoe", "{photos}/notes.jpg", "-m", "{ckpt}"], "notes.jpg is not an image", None),
        (["gallery", "{db}", "add", "zoe", "{photos}/cut.jpg", "-m", "{ckpt}"], "cut.jpg is corrupt or truncated", None),
        (["gallery", "{db}", "add", "", "{photos}/people/bob/1.png", "-m", "{ckpt}"], "a name cannot be empty", None),
        (["gallery", "{db}", "rename", "bob", "ann"], "'ann' is already enrolled", None),
        (["gallery", "{db}", "delete", "nobody"], "nobody called 'nobody'", None),
        (["enroll", "{tmp}/bad-names", "-o", "{db}", "-m", "{ckpt}"], "is not valid UTF-8 text", "bad_names"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_change_nothing(capsys, checkpoint, photos, tmp_path, argv, message, prepare):  # noqa: F811
    db = tmp_path / "people.db"
    assert run(capsys, "enroll", str(photos / "people"), "-o", str(db), "-m", checkpoint)[0] == 0
    if prepare == "bad_names":
        shutil.copytree(photos / "people", tmp_path / "bad-names")
        os.mkdir(os.fsencode(tmp_path / "bad-names") + b"/\xff\xfe")  # a folder name that is not UTF-8
        write(tmp_path / "bad-names" / os.fsdecode(b"\xff\xfe") / "1.png", np.zeros((8, 8, 3), np.uint8))
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM templates")
            conn.execute("DELETE FROM people")
    elif prepare is not None:
        db.unlink()
        prepare(db)
    before = db.read_bytes() if prepare is not None else None
    expected = None if prepare is not None else names(capsys, db)
    argv = [a.format(photos=photos, db=db, tmp=tmp_path, ckpt=checkpoint) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith(f"meer {argv[0]}: error: ") and message in err, err
    if prepare == "bad_names":
        assert names(capsys, db) == {}  # checked before anyone was enrolled
    elif prepare is not None:
        assert db.read_bytes() == before
    else:
        assert names(capsys, db) == expected


@pytest.mark.slow  # a full synthetic evaluation: about 30 s on 2 cores
def test_eval_calibrates_the_identification_threshold(capsys, checkpoint, tmp_path):  # noqa: F811
    import meer
    from meer.gallery import identification_threshold
    from meer.inference.checkpoint import find_checkpoint

    folder = shutil.copytree(find_checkpoint(checkpoint), tmp_path / "step")
    code, out, _ = run(capsys, "eval", str(folder), "--synthetic", "--calibrate", "M-U",
                       "--calibrate-identification", "0.05", "--quiet", "-o", str(tmp_path / "eval"))
    assert code == 0 and "identification threshold" in out and "FAR" in out
    model = meer.load(folder, detector=None)
    threshold, calibrated = identification_threshold(model)
    assert calibrated and threshold == model.calibration.identification_threshold
    assert model.calibration.identification_far <= 0.05 and "target FAR 0.05" in model.calibration.identification_protocol


@pytest.mark.slow  # a full synthetic evaluation: about 30 s on 2 cores
def test_eval_calibrates_one_threshold_per_setting_and_reports_accuracy_at_them(capsys, checkpoint, tmp_path):  # noqa: F811
    from meer.calibration import read_calibration
    from meer.inference.checkpoint import find_checkpoint

    folder = shutil.copytree(find_checkpoint(checkpoint), tmp_path / "step")
    code, out, _ = run(capsys, "eval", str(folder), "--synthetic", "--calibrate", "all", "--quiet",
                       "-o", str(tmp_path / "eval"))
    assert code == 0 and all(f"calibrated {s} threshold" in out for s in ("U-U", "M-U", "M-M"))
    stored = read_calibration(folder)
    assert stored.per_setting and stored.threshold == stored.thresholds["M-U"]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["at_stored_thresholds"]["synthetic"]
    for setting in ("U-U", "M-U", "M-M"):
        # calibrated on this very protocol: the stored threshold's accuracy is the pooled best
        assert metrics[setting]["threshold"] == pytest.approx(stored.thresholds[setting])
        assert metrics[setting]["accuracy"] == pytest.approx(stored.accuracies[setting])
    assert "acc at stored %" in out
