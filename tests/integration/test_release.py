"""A release folder (`meer export`) loads like a checkpoint, and the model meer ships works."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import meer
from meer.api import default_model
from meer.calibration import Calibration, read_calibration, write_calibration
from meer.cli import main
from meer.data.synthetic import SyntheticFaces
from meer.inference.checkpoint import find_checkpoint

from .apikit import tiny_run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "default_model_embeddings.json"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_half_precision_release_loads_and_embeds_like_its_checkpoint(tmp_path_factory, tmp_path, capsys):
    run = shutil.copytree(tiny_run(tmp_path_factory), tmp_path / "run")  # the shared run stays uncalibrated
    write_calibration(find_checkpoint(run), Calibration(0.42, "test", 0.9, "M-U"))
    fc = "backbone.head.fc.weight"
    assert main(["export", str(run), "-o", str(tmp_path / "release"), "--half", "--int8", fc]) == 0
    assert "calibration.json (threshold 0.4200" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(tmp_path / "release" / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert stored[f"{fc}.qint8"].dtype == torch.int8 and fc not in stored
    assert {v.dtype for k, v in stored.items() if not k.startswith(fc)} <= {torch.float16, torch.int64}
    full, release = meer.load(run, detector=None), meer.load(tmp_path / "release", detector=None)
    assert release.threshold == pytest.approx(0.42) and release.calibrated
    faces = SyntheticFaces(3, 2, 32, seed=9).generate().images
    a, b = full.embed(list(faces), aligned=True), release.embed(list(faces), aligned=True)
    assert (a * b).sum(1).min() > 0.999  # fp16 rounding only
    assert not np.array_equal(a, b)  # ... which is there: the release really is half precision


def test_int8_blocks_round_trip_within_half_a_step():
    from meer.inference.checkpoint import dequantize_int8, quantize_int8

    weight = torch.randn(3, 150) * torch.logspace(-3, 0, 150)  # blocks of very different scales
    values, scale = quantize_int8(weight)
    assert values.shape == (3, 150) and scale.shape == (3, 3)
    restored = dequantize_int8({"w.qint8": values, "w.qscale": scale})["w"]
    step = scale.float().repeat_interleave(64, dim=1)[:, :150]
    assert ((restored - weight).abs() <= 0.5 * step + 1e-3 * weight.abs()).all()


def test_int8_of_an_unknown_weight_is_a_one_line_error(tmp_path_factory, tmp_path, capsys):
    code = main(["export", str(tiny_run(tmp_path_factory)), "-o", str(tmp_path / "r"), "--int8", "no.such.weight"])
    assert code == 2 and "not a 2-D weight of this model" in capsys.readouterr().err


def test_a_release_without_config_is_refused(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"source": "x"}))
    with pytest.raises(ValueError, match="has no config: not a meer release"):
        meer.load(tmp_path, detector=None)


def test_the_shipped_model_gives_its_recorded_embeddings():
    folder = default_model()
    assert (folder / "model.safetensors").stat().st_size < 25 * 2**20
    assert (folder / "PROVENANCE.md").is_file()
    expected = json.loads(FIXTURE.read_text())
    model = meer.load(detector=None)  # no argument: the shipped model
    assert model.calibrated and model.threshold == pytest.approx(read_calibration(folder).threshold)
    faces = SyntheticFaces(**expected["faces"]).generate().images
    embeddings = model.embed(list(faces), aligned=True)
    np.testing.assert_allclose(embeddings, np.array(expected["embeddings"]), atol=1e-4)
    # different synthetic people are told apart at the shipped threshold, the same person is not
    same = float(embeddings[0] @ embeddings[1])
    different = float(embeddings[0] @ embeddings[2])
    assert same > different


def test_the_shipped_model_enrols_and_identifies(tmp_path, capsys):
    """Galleries and embedding files record the model's fingerprint; a release (the shipped
    model) has no state.json, so the fingerprint hashes its model.json and weights."""
    from meer.gallery import enroll_photos, identify_photo, open_gallery

    model = meer.load(detector=None)
    assert len(model.fingerprint) == 16 and model.fingerprint == meer.load(detector=None).fingerprint
    faces = SyntheticFaces(3, 2, 112, seed=4).generate()
    people = {f"p{k}": [faces.images[i] for i in np.flatnonzero(faces.labels == k)] for k in range(3)}
    gallery = model.enroll(people, aligned=True)
    assert model.identify(people["p1"][0], gallery, aligned=True)[0].name == "p1"
    store = open_gallery(tmp_path / "people.db", model)
    enroll_photos(store, model, "p2", people["p2"], aligned=True)
    assert identify_photo(store, model, people["p2"][1], aligned=True).name == "p2"
    # the same weights exported again (model.json records where from) are the same model
    assert main(["export", str(default_model()), "-o", str(tmp_path / "again")]) == 0
    assert meer.load(tmp_path / "again", detector=None).fingerprint == model.fingerprint
    assert identify_photo(open_gallery(tmp_path / "people.db", meer.load(tmp_path / "again", detector=None)),
                          model, people["p2"][0], aligned=True).name == "p2"
    # another release of other weights is another model: its gallery is refused
    other = shutil.copytree(default_model(), tmp_path / "other")
    weights = other / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # the last byte of the last tensor
    assert meer.load(other, detector=None).fingerprint != model.fingerprint
    with pytest.raises(ValueError, match="another model"):
        open_gallery(tmp_path / "people.db", meer.load(other, detector=None))
    # and the CLI's embedding file
    photos = tmp_path / "crops"
    photos.mkdir()
    Image.fromarray(faces.images[0]).save(photos / "a.png")
    assert main(["embed", str(photos), "-o", str(tmp_path / "e.safetensors"), "--aligned"]) == 0
    assert "1 embeddings" in capsys.readouterr().out
