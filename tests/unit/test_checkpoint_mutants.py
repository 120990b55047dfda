"""Checkpoint behaviour found missing by mutation testing (issue #18): what ``load_train_state``
refuses and where it puts the tensors, release folders, int8 weights and pruning."""

import json

import pytest
import torch
import torch.serialization

from meer.inference import checkpoint as ckpt

RAN = []


def _record_side_effect(marker):
    RAN.append(marker)
    return marker


class Payload:
    """An object whose unpickling runs code: what a hostile ``train_state.pt`` would hold."""

    def __reduce__(self):
        return _record_side_effect, ("payload ran",)


def save(run, train_state, step=1):
    tensors = {"model.w": torch.ones(2), "centres.weight": torch.zeros(3, 2)}
    return ckpt.save_checkpoint(run, f"step_{step:08d}", tensors, train_state, {"step": step})


def test_a_train_state_holding_a_pickled_object_is_refused_without_running_it(tmp_path):
    folder = save(tmp_path, {"step": torch.tensor(1), "extra": Payload()})
    RAN.clear()
    with pytest.raises(Exception, match="(?i)weights.only"):
        ckpt.load_train_state(folder)
    assert RAN == []


def test_a_train_state_written_on_a_gpu_is_read_onto_the_cpu(tmp_path, monkeypatch):
    # Tag every storage as a CUDA one while saving, as torch.save does on a GPU machine.
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    folder = save(tmp_path, {"step": torch.tensor(3), "torch_rng": torch.get_rng_state()})
    monkeypatch.undo()
    state = ckpt.load_train_state(folder)
    assert state["step"].device.type == "cpu" and state["step"].item() == 3
    assert state["torch_rng"].device.type == "cpu"
    torch.set_rng_state(state["torch_rng"])  # usable as the trainer uses it


def write_release(folder, tensors, config=True):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / ckpt.RELEASE_WEIGHTS))
    body = {"config": {"model": {"embedding_dim": 4}}, "source": "x"} if config else {"source": "x"}
    (folder / ckpt.RELEASE_CONFIG).write_text(json.dumps(body))
    return folder


def test_a_release_folder_reads_like_a_checkpoint_with_its_weights_named_as_the_models(tmp_path):
    weight = torch.linspace(-1, 1, 6 * 70).view(6, 70)
    values, scale = ckpt.quantize_int8(weight)
    release = write_release(tmp_path / "release", {
        "backbone.w": torch.arange(3.0), "head.fc.weight.qint8": values, "head.fc.weight.qscale": scale,
    })
    assert ckpt.is_release(release) and ckpt.find_checkpoint(release) == release
    state = ckpt.read_state(release)
    assert state == {"format_version": ckpt.FORMAT_VERSION, "config": {"model": {"embedding_dim": 4}}, "source": "x"}
    tensors = ckpt.load_weights(release)
    assert set(tensors) == {"model.backbone.w", "model.head.fc.weight"}
    assert torch.equal(tensors["model.backbone.w"], torch.arange(3.0))
    torch.testing.assert_close(tensors["model.head.fc.weight"], weight, atol=1 / 127, rtol=0)
    # a checkpoint folder (state.json present) is never taken for a release, even with a model.json
    folder = save(tmp_path / "run", {"step": torch.tensor(1)})
    (folder / ckpt.RELEASE_CONFIG).write_text("{}")
    assert not ckpt.is_release(folder) and ckpt.read_state(folder)["step"] == 1
    assert not ckpt.is_release(tmp_path / "nothing")


def test_a_release_without_a_config_is_refused(tmp_path):
    release = write_release(tmp_path / "release", {"w": torch.zeros(1)}, config=False)
    with pytest.raises(ValueError, match="no config: not a meer release"):
        ckpt.read_state(release)
    (release / ckpt.RELEASE_CONFIG).write_text("[1, 2]")
    with pytest.raises(ValueError, match="no config"):
        ckpt.read_state(release)


def test_int8_blocks_of_64_columns_each_scaled_to_their_largest_value():
    weight = torch.zeros(2, 130)
    weight[0, :64] = torch.linspace(-2.54, 2.54, 64)  # block 0 of row 0: largest |w| 2.54
    weight[0, 64:128] = 0.127  # block 1: all the same value
    weight[1, 128:] = torch.tensor([-5.0, 1.0])  # block 2 of row 1: two columns only
    values, scale = ckpt.quantize_int8(weight)
    assert values.dtype == torch.int8 and values.shape == (2, 130)
    assert scale.dtype == torch.float16 and scale.shape == (2, 3)
    torch.testing.assert_close(scale[0].float(), torch.tensor([0.02, 0.001, 1e-12]).half().float())
    torch.testing.assert_close(scale[1, 2].float(), torch.tensor(5 / 127).half().float())
    assert values[0, 0] == -127 and values[0, 63] == 127 and torch.all(values[0, 64:128] == 127)
    assert values[1, 128] == -127 and values[1, 129] == round(127 / 5)
    assert torch.all(values[1, :128] == 0)  # all-zero blocks come back zero
    back = ckpt.dequantize_int8({"w.qint8": values, "w.qscale": scale, "other": torch.ones(1)})
    assert set(back) == {"w", "other"} and back["w"].dtype == torch.float32 and back["w"].shape == (2, 130)
    # within half a step of each block's scale
    steps = scale.float().repeat_interleave(64, dim=1)[:, :130]
    assert torch.all((back["w"] - weight).abs() <= steps / 2 + 1e-6)


def test_int8_rounds_to_the_nearest_step_and_never_leaves_the_symmetric_range():
    torch.manual_seed(0)
    weight = torch.randn(5, 64) * 3
    values, scale = ckpt.quantize_int8(weight)
    assert values.min() >= -127 and values.max() <= 127
    assert torch.all(values.abs().amax(dim=1) == 127)
    exact = weight / scale.float()
    assert torch.all((values.float() - exact).abs() <= 0.5 + 1e-3)


def test_the_weights_file_names_its_format_in_its_metadata(tmp_path):
    from safetensors import safe_open

    folder = save(tmp_path, {"step": torch.tensor(1)})
    with safe_open(str(folder / ckpt.WEIGHTS), "pt") as f:
        assert f.metadata() == {"format": f"meer-{ckpt.FORMAT_VERSION}"}


def test_a_checkpoint_is_written_under_a_hidden_temporary_name_that_the_next_save_clears(tmp_path, monkeypatch):
    save(tmp_path, {"step": torch.tensor(1)}, step=1)
    root = tmp_path / "checkpoints"
    seen, real_save = [], torch.save

    def watching_save(obj, f, *args, **kwargs):
        seen.extend(p.name for p in root.iterdir())
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", watching_save)
    save(tmp_path, {"step": torch.tensor(2)}, step=2)
    in_progress = [name for name in seen if name not in ("latest", "step_00000001")]
    assert len(in_progress) == 1 and in_progress[0].startswith(".step_00000002.")
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_00000002"
    (root / in_progress[0]).mkdir()  # as a run killed while writing would leave it
    save(tmp_path, {"step": torch.tensor(3)}, step=3)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_by_default_the_two_newest_checkpoints_are_kept(tmp_path):
    tensors = {"model.w": torch.ones(1)}
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, f"step_{step:08d}", tensors, {}, {"step": step})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000003"]


def test_blocks_of_tiny_weights_saturate_within_the_symmetric_range_and_keep_their_sign():
    # Their float16 scale is subnormal and coarse: w / scale can pass 127, the clamp must hold it.
    weight = torch.tensor([[1e-5, -1e-5, 5e-6] + [0.0] * 61])
    values, scale = ckpt.quantize_int8(weight)
    assert values[0, 0] == 127 and values[0, 1] == -127
    back = ckpt.dequantize_int8({"w.qint8": values, "w.qscale": scale})["w"]
    assert back[0, 0] > 0 and back[0, 1] < 0 and back[0, 2] > 0


def test_flat_state_skips_an_absent_module_wherever_it_stands():
    # e.g. a model without a generator (no discriminator) that distils through a projection
    from torch import nn

    flat = ckpt.flat_state({"model": nn.Linear(2, 2), "discriminator": None, "projection": nn.Linear(2, 3, bias=False)})
    assert set(flat) == {"model.weight", "model.bias", "projection.weight"}


def test_pruning_never_fails_a_run_when_an_old_folder_cannot_be_deleted(tmp_path, monkeypatch):
    # e.g. a network file system, or another process reading the folder: the run goes on
    for name in ("step_00000001", "step_00000002", "step_00000003", ".step_00000004.tmp"):
        (tmp_path / name).mkdir()
    attempted = []

    def rmtree(path, ignore_errors=False):
        attempted.append(path.name)
        if not ignore_errors:
            raise PermissionError(f"cannot delete {path}")

    monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)
    ckpt.prune(tmp_path, keep=1, protect={"step_00000002"})
    assert sorted(attempted) == [".step_00000004.tmp", "step_00000001"]
