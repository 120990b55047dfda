"""Teacher-guided training (dlib's ResNet as frozen teacher and as the student's start).

Needs dlib's weights (face-recognition-models, in the dev extra); skips without them.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import meer.models.backbones.dlib_resnet as dlib_resnet
import meer.train.teacher as teacher_module
from meer.config import load_config
from meer.data.synthetic import SyntheticFaces
from meer.inference.checkpoint import load_model
from meer.train.teacher import CACHE_FILE
from meer.train.trainer import Trainer

from .conftest import stages

TEACHER_CONFIG = Path(__file__).resolve().parents[2] / "bench" / "configs" / "lfw-teacher.yaml"


@pytest.fixture(scope="module")
def faces150():
    try:
        dlib_resnet.find_dlib_model()
    except FileNotFoundError:
        pytest.skip("face-recognition-models (dlib's weights) is not installed")
    return SyntheticFaces(num_identities=6, images_per_identity=4, size=150, seed=1).generate()


def teacher_config(out, *extra):
    return load_config(TEACHER_CONFIG, [
        f"train.out_dir={out}", "data.source=synthetic", "data.batch_size=8", "train.log_every=2",
        "train.ckpt_every=100", "optim.warmup_steps=0", "model.generator_width=8", "model.discriminator_width=8",
        "model.discriminator_layers=2", stages(4, 2, 2), *extra,
    ])


def test_teacher_guided_training_starts_as_the_teacher_and_trains(tmp_path, faces150, monkeypatch):
    cfg = teacher_config(tmp_path / "run")
    trainer = Trainer(cfg, faces150, progress=False)
    targets = trainer.teacher_targets
    assert targets.shape == (len(faces150), 2, 128)

    # the student starts as the teacher (decoupling closed, projection = identity) ...
    x = torch.from_numpy(faces150.images[:6].copy()).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        student = F.normalize(trainer.nets.model.eval()(x).embedding, dim=1)
    assert F.cosine_similarity(student, targets[:6, 0]).min() > 0.99
    # ... and the class centres start at the teacher's class means
    centres = F.normalize(trainer.nets.classifier.full_weight(), dim=1)
    label = int(trainer.faces.labels[0])
    mean = F.normalize(targets[trainer.faces.labels == label, 0].mean(0), dim=0)
    assert torch.allclose(centres[label], mean, atol=1e-5)

    history = trainer.fit(resume=False)
    recognition = [r for r in history if r["stage"] == "recognition"]
    assert all(r["distill"] > 0 and r["distill_clean"] > 0 for r in recognition)
    assert any("id" in r for r in history if r["stage"] == "synthesis")
    assert (tmp_path / "run" / CACHE_FILE).is_file()

    # a second run on the same data reads the cached targets instead of running the teacher
    monkeypatch.setattr(teacher_module, "embed_both_ways", lambda *a, **k: pytest.fail("teacher ran again"))
    again = Trainer(teacher_config(tmp_path / "run"), faces150, progress=False)
    assert torch.equal(again.teacher_targets, targets)

    # the trained checkpoint loads without the weights package: every weight is in it
    def missing(*args, **kwargs):
        raise FileNotFoundError("no weights package")

    monkeypatch.setattr(dlib_resnet, "find_dlib_model", missing)
    model, _, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        np.testing.assert_allclose(model(x).embedding.numpy(), trainer.nets.model.eval()(x).embedding.numpy(),
                                   atol=1e-5)


def test_finished_run_resumes_to_nothing(tiny_config, tiny_faces):
    cfg = tiny_config(stages(2, 2, 2))
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    assert Trainer(cfg, tiny_faces, progress=False).fit(resume=True) == []
