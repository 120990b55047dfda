"""Checkpoint behaviour found missing by mutation testing (issue #18): what ``load_train_state``
refuses and where it puts the tensors, release folders, int8 weights and pruning."""

import pytest
import torch
import torch.serialization

from meer.train import checkpoint as ckpt

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
