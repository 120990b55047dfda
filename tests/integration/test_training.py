"""A few CPU training steps on synthetic faces: losses fall, checkpoints restore exactly, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meer.inference import checkpoint as ckpt
from meer.train.trainer import Trainer

from .conftest import killed_after, loss_means, stages


def test_each_stage_lowers_its_losses(tiny_config, tiny_faces):
    cfg = tiny_config(stages(recognition=40, synthesis=40, joint=30))
    history = Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    for stage, key in [("recognition", "rec"), ("recognition", "occ"), ("synthesis", "pix"), ("joint", "total")]:
        before, after = loss_means(history, stage, key), loss_means(history, stage, key, first=False)
        assert after < before, f"{stage}/{key} did not fall: {before:.4f} -> {after:.4f}"


def test_run_folder_records_config_seed_and_versions(tiny_config, tiny_faces):
    cfg = tiny_config(stages(2, 2, 2), "train.seed=5")
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    run = json.loads((Path(cfg.train.out_dir) / "run.json").read_text())
    assert run["seed"] == 5 and run["versions"]["torch"] == torch.__version__
    latest = ckpt.latest_checkpoint(cfg.train.out_dir)
    state = ckpt.read_state(latest)
    assert state["stage"] == "joint" and state["config"]["train"]["seed"] == 5


def test_checkpoint_round_trip_is_bit_exact(tiny_config, tiny_faces):
    cfg = tiny_config(stages(3, 3, 3))
    trainer = Trainer(cfg, tiny_faces, progress=False)
    trainer.fit(resume=False)
    model = trainer.nets.model.eval()
    loaded, loaded_cfg, _ = ckpt.load_model(cfg.train.out_dir)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = model(x), loaded(x)
        assert torch.equal(a.embedding, b.embedding)
        assert torch.equal(model.unmask(x, a).restored, loaded.unmask(x, b).restored)
    assert loaded_cfg == cfg


def test_killed_run_resumes_and_reproduces_the_uninterrupted_losses(tiny_config, tiny_faces, monkeypatch):
    extra = [stages(20, 20, 10), "train.deterministic=true", "train.ckpt_every=5", "train.keep_checkpoints=1",
             "train.log_every=1"]
    reference = Trainer(tiny_config(*extra, run="reference"), tiny_faces, progress=False).fit(resume=False)

    cfg = tiny_config(*extra)
    killed_after(cfg, tiny_faces, 27, monkeypatch)  # at synthesis step 8; the last checkpoint is synthesis step 5
    assert ckpt.latest_checkpoint(cfg.train.out_dir).name == "step_00000025"

    resumed = Trainer(cfg, tiny_faces, progress=False).fit(resume=True)
    tail = [r for r in reference if r["stage"] == "joint" or (r["stage"] == "synthesis" and r["step"] > 5)]
    assert [(r["stage"], r["step"]) for r in resumed] == [(r["stage"], r["step"]) for r in tail]
    for a, b in zip(resumed, tail):
        for key in ("total", "pix", "id", "d_loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{a['stage']} {a['step']} {key}")
    # the rows logged after the checkpoint by the killed run were dropped, then logged again
    logged = [json.loads(line) for line in (Path(cfg.train.out_dir) / "history.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in logged] == [(r["stage"], r["step"]) for r in reference]
    run = json.loads((Path(cfg.train.out_dir) / "run.json").read_text())
    assert [r["from"] for r in run["resumes"]] == ["step_00000025"] and "argv" in run


def test_resuming_a_folder_of_another_model_is_refused(tiny_config, tiny_faces):
    Trainer(tiny_config(stages(2, 0, 0)), tiny_faces, progress=False).fit(resume=False)
    wider = tiny_config(stages(4, 0, 0), "model.width=0.5")
    with pytest.raises(ValueError, match=r"holds another model \(model.width: 0.125 there, 0.5 now\)"):
        Trainer(wider, tiny_faces, progress=False).fit(resume=True)


def test_starting_over_sets_the_previous_run_aside(tiny_config, tiny_faces):
    cfg = tiny_config(stages(4, 2, 2))
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    shorter = tiny_config(stages(2, 1, 1))
    Trainer(shorter, tiny_faces, progress=False).fit(resume=False)
    run = Path(cfg.train.out_dir)
    aside = list(run.glob("checkpoints.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "step_00000008").is_dir()
    assert ckpt.latest_checkpoint(run).name == "step_00000004"
    # only the new run's checkpoints (one per stage end, the newest two kept)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000003", "step_00000004"]


def test_tensorboard_gets_loss_scalars_and_restoration_grids(tiny_config, tiny_faces):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(stages(2, 5, 5), "train.tensorboard=true")
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    events = EventAccumulator(str(Path(cfg.train.out_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/recognition/rec", "train/synthesis/pix", "train/joint/id", "perf/images_per_s"} <= set(tags["scalars"])
    assert {"images/synthesis", "images/joint"} <= set(tags["images"])
    image = events.Images("images/synthesis")[-1]
    assert image.height == 3 * 32 and image.width == 8 * 32  # masked / restored / clean rows
