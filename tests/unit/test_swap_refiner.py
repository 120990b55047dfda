"""scripts/swap_refiner.py: one checkpoint's weights with another's occlusion refiner."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import torch

from meer.inference.checkpoint import flat_state, load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "src" / "meer" / "default_model"


def test_the_refiner_comes_from_the_second_checkpoint_and_everything_else_from_the_first(tmp_path):
    model, cfg, _ = load_model(RELEASE)
    released = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        for p in model.occlusion_refiner.parameters():
            p.add_(0.5)
    save_checkpoint(tmp_path / "donor", "step_00000007", flat_state({"model": model}), {},
                    {"config": dataclasses.asdict(cfg), "step": 7})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(RELEASE),
                           str(tmp_path / "donor"), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    swapped, _, state = load_model(tmp_path / "out")
    for key, value in swapped.state_dict().items():
        expected = model.state_dict()[key] if key.startswith("occlusion_refiner.") else released[key]
        assert torch.equal(value, expected), key
    assert state["occlusion_refiner_from"] == str(tmp_path / "donor")


def test_a_donor_without_a_refiner_is_refused_in_one_line(tmp_path):
    model, cfg, _ = load_model(RELEASE)
    model.occlusion_refiner = None
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, occlusion_refiner=False, generator_occlusion="coarse"))
    save_checkpoint(tmp_path / "bare", "step_00000001", flat_state({"model": model}), {},
                    {"config": dataclasses.asdict(cfg), "step": 1})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(RELEASE),
                           str(tmp_path / "bare"), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip() == f"error: {tmp_path / 'bare'} has no occlusion refiner"
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(tmp_path / "nowhere"),
                           str(RELEASE), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: ") and "nowhere" in done.stderr


def test_a_generator_comes_from_a_file_of_its_own_weights(tmp_path):
    from safetensors.torch import save_file

    model, _, _ = load_model(RELEASE)
    released = {key: value.clone() for key, value in model.state_dict().items()}
    trained = {key: value + 0.25 if value.is_floating_point() else value
               for key, value in model.generator.state_dict().items()}
    save_file(trained, tmp_path / "generator.safetensors")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(RELEASE),
                           str(tmp_path / "generator.safetensors"), str(tmp_path / "out"), "--part", "generator"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    swapped, _, state = load_model(tmp_path / "out")
    for key, value in swapped.state_dict().items():
        expected = trained[key.removeprefix("generator.")] if key.startswith("generator.") else released[key]
        assert torch.equal(value, expected), key
    assert state["generator_from"] == str(tmp_path / "generator.safetensors")


def test_weights_of_another_part_are_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    model, _, _ = load_model(RELEASE)
    save_file(dict(model.occlusion_refiner.state_dict()), tmp_path / "refiner.safetensors")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(RELEASE),
                           str(tmp_path / "refiner.safetensors"), str(tmp_path / "out"), "--part", "generator"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and "is not the generator of" in done.stderr
    assert "tensors missing" in done.stderr and not (tmp_path / "out").exists()


def test_a_whole_models_weights_or_a_broken_file_are_refused_in_one_line(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"hi")
    for donor, says in ((RELEASE / "model.safetensors", "a whole model's weights"),
                        (tmp_path / "broken.safetensors", "error: ")):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "swap_refiner.py"), str(RELEASE), str(donor),
                               str(tmp_path / "out"), "--part", "generator"], capture_output=True, text=True)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: ") and says in done.stderr and "Traceback" not in done.stderr
