"""``model.init`` starts a run from another checkpoint's weights; with ``model.frozen_stages: 4``
and a stage that trains only ``backbone`` and ``centres``, the embedding head alone learns, so
the occlusion map, mask verdicts and generator of the model it started from stay bit for bit."""

import dataclasses

import numpy as np
import pytest
import torch

from meer.config import load_config
from meer.inference import checkpoint as ckpt
from meer.train.objectives import generator_objective
from meer.train.trainer import Trainer

from .conftest import TINY, stages

HEAD_ONLY = ("model.frozen_stages=4", "loss.occ=0", "loss.mask=0", "loss.dec=0",
             "stages=[{name: recognition, steps: 3, train: [backbone, centres], losses: [recognition]}]")


@pytest.fixture(scope="module")
def started_from(tmp_path_factory, tiny_faces):
    out = tmp_path_factory.mktemp("first")
    cfg = load_config("tiny", [*TINY, f"train.out_dir={out}", stages(2, 2, 0)])
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    return ckpt.latest_checkpoint(out)


def test_init_loads_every_weight_and_a_head_only_stage_moves_nothing_else(tiny_config, tiny_faces, started_from):
    masked = np.zeros(len(tiny_faces), bool)
    masked[::4] = True  # photos of real masks: four mask classes suffice when the classifier does not learn
    faces = dataclasses.replace(tiny_faces, masked=masked)
    trainer = Trainer(tiny_config(f"model.init={started_from}", *HEAD_ONLY), faces, progress=False)
    source = ckpt.load_model(started_from)[0].state_dict()
    start = trainer.nets.model.state_dict()
    assert source.keys() == start.keys()
    assert all(torch.equal(start[k], v) for k, v in source.items())

    trainer.fit(resume=False)
    after = trainer.nets.model.state_dict()
    moved = {k for k, v in after.items() if not torch.equal(v, source[k])}
    assert "backbone.head.fc.weight" in moved
    assert all(k.startswith("backbone.head.") for k in moved), sorted(k for k in moved if not k.startswith("backbone.head."))

    trainer.nets.model.eval()
    batch = trainer.to_device(next(iter(trainer.loader(0))))
    with torch.no_grad():
        _, parts, _ = generator_objective(batch, trainer.nets, trainer.cfg.loss, {"recognition"})
    assert "rec" in parts and not {"occ", "mask", "dec"} & parts.keys()  # weight 0: left out


def test_init_from_another_network_is_a_clear_error(tiny_config, started_from):
    with pytest.raises(ValueError, match=r"weights do not match this config's model section \(model.init\)"):
        Trainer(tiny_config(f"model.init={started_from}", "model.embedding_dim=16"), progress=False)


def test_real_photos_still_need_the_real_class_when_the_classifier_learns(tiny_config, tiny_faces, started_from):
    faces = dataclasses.replace(tiny_faces, masked=np.arange(len(tiny_faces)) % 4 == 0)
    with pytest.raises(ValueError, match="num_mask_types: 5"):
        Trainer(tiny_config(f"model.init={started_from}", *HEAD_ONLY[:1]), faces, progress=False)


def test_no_training_stage_moves_the_occlusion_refiner(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config("model.occlusion_refiner=true", stages(1, 1, 1)), tiny_faces, progress=False)
    refiner = trainer.nets.model.occlusion_refiner
    before = {k: v.clone() for k, v in refiner.state_dict().items()}
    trainer.fit(resume=False)
    assert all(torch.equal(refiner.state_dict()[k], v) for k, v in before.items())
    assert not any(p.requires_grad for p in refiner.parameters())
