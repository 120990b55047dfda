"""Training on photos of real masks: samples with no clean twin reach the recognition, mask
class and pull losses, and none of the losses that need the twin or the occlusion map."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from meer.config import TeacherConfig
from meer.data.faceset import mix
from meer.data.masks import REAL_MASK
from meer.train.objectives import discriminator_objective, generator_objective
from meer.train.trainer import Trainer, unmasked_means

from .conftest import stages


@pytest.fixture(scope="module")
def real_faces(tiny_faces):
    masked = np.zeros(len(tiny_faces), bool)
    masked[::4] = True
    return dataclasses.replace(tiny_faces, masked=masked)


@pytest.fixture
def trainer(tiny_config, real_faces):
    cfg = tiny_config(stages(2, 2, 2), "model.num_mask_types=5", "data.mask_prob=1.0", "loss.feat_match=0.5")
    trainer = Trainer(cfg, real_faces, progress=False)
    trainer.nets.model.eval()
    trainer.nets.discriminator.eval()  # spectral norm's power iteration would move between calls
    return trainer


def batch_with_both(trainer):
    for batch in trainer.loader(0):
        batch = trainer.to_device(batch)
        real = batch["twin"] == 0
        if real.any() and (~real).any():
            return batch, real
    raise AssertionError("no batch with both kinds")


def parts_of(trainer, batch, losses, teacher=None):
    with torch.no_grad():
        _, parts, _ = generator_objective(batch, trainer.nets, trainer.cfg.loss, losses, teacher)
    return {k: float(v) for k, v in parts.items()}


def test_real_rows_never_reach_the_twin_and_occlusion_losses(trainer):
    batch, real = batch_with_both(trainer)
    assert (batch["mask_type"][real] == REAL_MASK).all()
    before = parts_of(trainer, batch, {"recognition", "synthesis"})
    changed = dict(batch)
    changed["clean"] = batch["clean"].clone()
    changed["clean"][real] = -batch["clean"][real]  # what a "twin" of a real photo would be: unknown
    changed["occlusion"] = batch["occlusion"].clone()
    changed["occlusion"][real] = 1.0
    after = parts_of(trainer, changed, {"recognition", "synthesis"})
    for key in ("occ", "pix", "feat_match", "id", "rec_clean"):
        assert after[key] == pytest.approx(before[key], rel=1e-6), key
    # the real photos themselves are trained on: changing them moves the recognition loss
    moved = dict(batch)
    moved["masked"] = batch["masked"].clone()
    moved["masked"][real] = torch.flip(batch["masked"][real], dims=[2])
    assert parts_of(trainer, moved, {"recognition"})["rec"] != pytest.approx(before["rec"], rel=1e-6)
    # and the twin-based losses do see the other rows
    twins = dict(batch)
    twins["occlusion"] = batch["occlusion"].clone()
    twins["occlusion"][~real] = 1 - batch["occlusion"][~real]
    assert parts_of(trainer, twins, {"recognition"})["occ"] != pytest.approx(before["occ"], rel=1e-3)


def test_the_discriminator_never_sees_a_real_mask_as_real(trainer):
    batch, real = batch_with_both(trainer)
    restored = batch["masked"]
    with torch.no_grad():
        d_loss, parts = discriminator_objective(batch, restored, trainer.nets)
        changed = dict(batch)
        changed["clean"] = batch["clean"].clone()
        changed["clean"][real] = 0.0
        _, changed_parts = discriminator_objective(changed, restored, trainer.nets)
        only_twins = {k: v[~real] for k, v in batch.items()}
        _, twin_parts = discriminator_objective(only_twins, restored[~real], trainer.nets)
    assert float(changed_parts["d_real"]) == pytest.approx(float(parts["d_real"]), rel=1e-6)
    assert float(parts["d_real"]) == pytest.approx(float(twin_parts["d_real"]), rel=1e-5)


def test_pull_reads_only_real_rows_and_distill_only_twins(trainer):
    nets = trainer.nets
    nets.projection = nn.Linear(32, 16, bias=False)
    cfg = TeacherConfig(kind="", distill=1.0, distill_clean=0.0, pull=2.0)
    batch, real = batch_with_both(trainer)
    batch["teacher"] = torch.nn.functional.normalize(torch.randn(len(real), 16), dim=1)
    before = parts_of(trainer, batch, {"recognition"}, cfg)
    assert before["pull"] > 0 and before["distill"] > 0
    moved_real = dict(batch, teacher=batch["teacher"].clone())
    moved_real["teacher"][real] = -batch["teacher"][real]
    after = parts_of(trainer, moved_real, {"recognition"}, cfg)
    assert after["distill"] == pytest.approx(before["distill"], rel=1e-6)
    assert after["pull"] != pytest.approx(before["pull"], rel=1e-3)
    moved_twins = dict(batch, teacher=batch["teacher"].clone())
    moved_twins["teacher"][~real] = -batch["teacher"][~real]
    after = parts_of(trainer, moved_twins, {"recognition"}, cfg)
    assert after["pull"] == pytest.approx(before["pull"], rel=1e-6)


def test_pull_is_its_weight_times_the_distance_of_the_real_rows_only(trainer):
    from meer.train.objectives import cosine_distance

    nets = trainer.nets
    nets.projection = nn.Linear(32, 16, bias=False)
    batch, real = batch_with_both(trainer)
    batch["teacher"] = torch.nn.functional.normalize(torch.randn(len(real), 16), dim=1)
    with torch.no_grad():
        projected = nets.projection(nets.model(batch["masked"]).embedding)
        distance = float(cosine_distance(projected[real], batch["teacher"][real]))
    for weight in (0.5, 2.0):
        parts = parts_of(trainer, batch, {"recognition"}, TeacherConfig(kind="", distill=1.0, pull=weight))
        assert parts["pull"] == pytest.approx(weight * distance, rel=1e-5)
    assert "pull" not in parts_of(trainer, batch, {"recognition"}, TeacherConfig(kind="", distill=1.0, pull=0.0))
    # a batch without real photos (every row has its twin, or no row says) is pulled by nothing
    for no_real in (dict(batch, twin=torch.ones_like(batch["twin"])), {k: v for k, v in batch.items() if k != "twin"}):
        assert parts_of(trainer, no_real, {"recognition"}, TeacherConfig(kind="", distill=1.0, pull=2.0))["pull"] == 0.0


def test_a_batch_of_real_photos_only_shows_the_discriminator_no_real_face(trainer):
    batch, real = batch_with_both(trainer)
    only_real = {k: v[real] for k, v in batch.items()}
    with torch.no_grad():
        d_loss, parts = discriminator_objective(only_real, only_real["masked"], trainer.nets)
    assert float(parts["d_real"]) == 0.0 and float(d_loss) == pytest.approx(0.5 * float(parts["d_fake"]), rel=1e-6)


def test_a_real_photo_is_pulled_to_its_persons_unmasked_photos(real_faces):
    n = len(real_faces)
    targets = torch.nn.functional.normalize(torch.randn(n, 2, 8), dim=-1)
    out = unmasked_means(targets, real_faces)
    row = 4  # a real photo; its person's other rows are unmasked
    person = real_faces.labels == real_faces.labels[row]
    clean = person & ~real_faces.real_masked
    expected = torch.nn.functional.normalize(targets[torch.from_numpy(clean)].sum(0), dim=-1)
    assert torch.allclose(out[row], expected, atol=1e-6)
    assert torch.equal(out[~torch.from_numpy(real_faces.real_masked)], targets[~torch.from_numpy(real_faces.real_masked)])


def test_training_on_real_masks_needs_the_real_mask_class(tiny_config, real_faces):
    with pytest.raises(ValueError, match="num_mask_types: 5"):
        Trainer(tiny_config(stages(2, 2, 2)), real_faces, progress=False)


def test_sources_mix_by_weight_in_training(tiny_config, tiny_faces, real_faces, tmp_path):
    cfg = tiny_config(stages(3, 1, 1), "model.num_mask_types=5",
                      "data.sources=[{path: synthetic, weight: 1}, {path: other, weight: 3}]")
    faces = mix([tiny_faces, real_faces])
    trainer = Trainer(cfg, faces, progress=False)
    stream = iter(trainer.loader(0))
    drawn = np.concatenate([next(stream)["index"].numpy() for _ in range(30)])
    assert (faces.source[drawn] == 1).mean() == pytest.approx(0.75, abs=0.05)
    history = trainer.fit(resume=False)
    assert history and all(np.isfinite(r["total"]) for r in history)
    with pytest.raises(ValueError, match="do not say which source"):
        Trainer(cfg, tiny_faces, progress=False)


def test_pasted_real_masks_train_with_their_twin_and_need_the_real_class(tiny_config, tiny_faces, tmp_path):
    from tests.unit.test_cutouts import cutouts

    path = str(cutouts().save(tmp_path / "cutouts.safetensors"))
    with pytest.raises(ValueError, match="data.real_masks pastes masks of class"):
        Trainer(tiny_config(stages(1, 1, 1), f"data.real_masks={path}"), tiny_faces, progress=False)
    cfg = tiny_config(stages(2, 1, 1), "model.num_mask_types=5", "data.mask_prob=1.0", f"data.real_masks={path}",
                      "data.real_mask_share=0.5")
    trainer = Trainer(cfg, tiny_faces, progress=False)
    batch = next(iter(trainer.loader(0)))
    real = batch["mask_type"] == REAL_MASK
    assert 0 < real.sum() < len(real) and (batch["twin"] == 1).all()
    assert (batch["occlusion"][real].sum(dim=(1, 2, 3)) > 0).all()
    history = trainer.fit(resume=False)
    assert history and all(np.isfinite(r["total"]) for r in history)
