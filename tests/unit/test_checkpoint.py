"""Checkpoint folders: what is written, what ``latest`` points at, pruning, and the errors a
damaged or foreign folder gives."""

import json

import pytest
import torch
from torch import nn

from meer.inference import checkpoint as ckpt


def save(run, step, value=1.0, keep=2):
    tensors = {"model.w": torch.full((2,), value), "centres.weight": torch.zeros(3, 2)}
    train_state = {"step": torch.tensor(step), "nested": {"lr": [0.1, 0.2]}}
    return ckpt.save_checkpoint(run, f"step_{step:08d}", tensors, train_state, {"step": step}, keep=keep)


def test_a_checkpoint_holds_weights_state_and_training_state(tmp_path):
    folder = save(tmp_path, 5, value=2.5)
    assert folder == tmp_path / "checkpoints" / "step_00000005"
    assert sorted(p.name for p in folder.iterdir()) == [ckpt.STATE, ckpt.TRAIN_STATE, ckpt.WEIGHTS]
    assert ckpt.read_state(folder) == {"format_version": ckpt.FORMAT_VERSION, "step": 5}
    weights = ckpt.load_weights(folder)
    assert torch.equal(weights["model.w"], torch.full((2,), 2.5)) and set(weights) == {"model.w", "centres.weight"}
    state = ckpt.load_train_state(folder)
    assert state["step"].item() == 5 and state["nested"] == {"lr": [0.1, 0.2]}
    assert json.loads((folder / ckpt.STATE).read_text())["format_version"] == ckpt.FORMAT_VERSION


def test_latest_points_at_the_newest_and_old_ones_are_pruned(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save(tmp_path, step, keep=2)
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text() == "step_00000003\n"
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_00000003"
    assert ckpt.find_checkpoint(tmp_path) == root / "step_00000003"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000002", "step_00000003"]
    save(tmp_path, 3, value=7.0, keep=2)  # the same step saved again replaces it
    assert ckpt.load_weights(tmp_path)["model.w"][0].item() == 7.0
    (root / ".step_00000009.tmp").mkdir()  # a temporary folder left by a killed run
    save(tmp_path, 4, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000004"]


def test_prune_keeps_a_protected_step(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step, keep=5)
    root = tmp_path / "checkpoints"
    ckpt.prune(root, keep=1, protect={"step_00000001"})
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000001", "step_00000003"]
    ckpt.prune(root, keep=0, protect=set())
    assert not list(root.glob("step_*"))


def test_a_failed_save_leaves_the_previous_checkpoint_in_place(tmp_path, monkeypatch):
    save(tmp_path, 1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_00000001"


def test_latest_pointing_at_a_missing_folder_is_no_checkpoint(tmp_path):
    save(tmp_path, 1)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000099\n")
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_errors_for_foreign_and_damaged_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.find_checkpoint(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not a meer checkpoint"):
        ckpt.find_checkpoint(tmp_path)
    folder = save(tmp_path / "run", 1)
    (folder / ckpt.STATE).write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        ckpt.read_state(folder)
    (folder / ckpt.STATE).write_text(json.dumps({"format_version": ckpt.FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="checkpoint format 2"):
        ckpt.read_state(folder)
    (folder / ckpt.WEIGHTS).write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        ckpt.load_weights(folder)
    (folder / ckpt.WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError):
        ckpt.load_weights(folder)


def test_flat_state_prefixes_copies_and_skips_absent_modules():
    layer = nn.Linear(2, 3)
    flat = ckpt.flat_state({"model": layer, "discriminator": None})
    assert set(flat) == {"model.weight", "model.bias"}
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(flat["model.weight"], layer.weight)  # a copy, not a view
    split = ckpt.split_state({**flat, "modelx.w": torch.zeros(1), "centres.weight": torch.zeros(1)}, "model")
    assert set(split) == {"weight", "bias"} and split["weight"] is flat["model.weight"]
