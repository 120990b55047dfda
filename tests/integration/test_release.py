"""A release folder (`meer export`) loads like a checkpoint, and the model meer ships works."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import meer
from meer.api import default_model
from meer.calibration import Calibration, read_calibration, write_calibration
from meer.cli import main
from meer.data.synthetic import SyntheticFaces
from meer.train.checkpoint import find_checkpoint

from .apikit import tiny_run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "default_model_embeddings.json"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_half_precision_release_loads_and_embeds_like_its_checkpoint(tmp_path_factory, tmp_path, capsys):
    # a copy: the session's tiny run is shared, and other tests expect it uncalibrated
    run = shutil.copytree(tiny_run(tmp_path_factory), tmp_path / "run")
    write_calibration(find_checkpoint(run), Calibration(0.42, "test", 0.9, "M-U"))
    assert main(["export", str(run), "-o", str(tmp_path / "release"), "--half"]) == 0
    assert "calibration.json (threshold 0.4200" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(tmp_path / "release" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    full, release = meer.load(run, detector=None), meer.load(tmp_path / "release", detector=None)
    assert release.threshold == pytest.approx(0.42) and release.calibrated
    faces = SyntheticFaces(3, 2, 32, seed=9).generate().images
    a, b = full.embed(list(faces), aligned=True), release.embed(list(faces), aligned=True)
    assert (a * b).sum(1).min() > 0.999  # fp16 rounding only
    assert not np.array_equal(a, b)  # ... which is there: the release really is half precision


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
