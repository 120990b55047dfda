"""What only a CUDA device shows: mixed precision, the loss scaler, deterministic resume,
torch.compile, and that a model trained or run on the GPU computes what the CPU computes.

    pytest -m gpu tests/integration/test_cuda.py

Skipped without a CUDA device. ``MEER_GPU_TESTS_DEVICE=cpu`` runs the same tests on the CPU
(where autocast and the loss scaler are off): a dry run of the tests' own logic before a GPU
is at hand.
"""

import math
import os

import numpy as np
import pytest
import torch

from meer.data.synthetic import SyntheticFaces
from meer.inference import checkpoint as ckpt
from meer.inference.batched import embed_images, mask_classes, unmask_images
from meer.train.trainer import Trainer

from .conftest import killed_after, loss_means, stages

DEVICE = os.environ.get("MEER_GPU_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_the_device():
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def on_device(*extra: str) -> list[str]:
    return [f"train.device={DEVICE}", "train.channels_last=true", *extra]


def assert_finite(history: list[dict]) -> None:
    for record in history:
        bad = {k: v for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{record['stage']} step {record['step']}: {bad}"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_lowers_each_stage_s_losses(tiny_config, tiny_faces, precision):
    cfg = tiny_config(stages(40, 40, 30), *on_device(f"train.precision={precision}"))
    history = Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    assert_finite(history)
    for stage, key in [("recognition", "rec"), ("recognition", "occ"), ("synthesis", "pix"), ("joint", "total")]:
        before, after = loss_means(history, stage, key), loss_means(history, stage, key, first=False)
        assert after < before, f"{precision} {stage}/{key} did not fall: {before:.4f} -> {after:.4f}"
    scaler = ckpt.load_train_state(cfg.train.out_dir)["scaler"]
    if precision == "fp16" and DEVICE == "cuda":  # the scaler runs, and has kept a usable scale
        assert 1.0 <= scaler["scale"] < 2.0**24
    else:
        assert scaler == {}  # off: bf16 keeps fp32's exponent range


def test_a_model_trained_on_the_device_computes_the_same_on_the_cpu(tiny_config, tiny_faces):
    cfg = tiny_config(stages(10, 10, 5), *on_device("train.precision=bf16"))
    trainer = Trainer(cfg, tiny_faces, progress=False)
    trainer.fit(resume=False)
    on_gpu = trainer.nets.model.eval()
    assert next(on_gpu.parameters()).device.type == DEVICE
    on_cpu, _, _ = ckpt.load_model(cfg.train.out_dir, "cpu")
    faces = tiny_faces.images[:32]
    a = embed_images(on_gpu, faces)
    b = embed_images(on_cpu, faces)
    assert (a * b).sum(1).min() > 0.999  # unit embeddings' cosines; fp32, TF32 convolutions on the GPU
    np.testing.assert_array_equal(mask_classes(on_gpu, faces), mask_classes(on_cpu, faces))
    restored_gpu = unmask_images(on_gpu, faces).restored.astype(float)
    restored_cpu = unmask_images(on_cpu, faces).restored.astype(float)
    assert np.abs(restored_gpu - restored_cpu).mean() < 0.5  # grey levels of 255


def test_the_shipped_model_on_the_device_gives_the_cpu_s_answers():
    import meer

    faces = SyntheticFaces(num_identities=8, images_per_identity=2, size=112, seed=5).generate().images
    gpu, cpu = meer.load(device=DEVICE, detector=None), meer.load(device="cpu", detector=None)
    assert (gpu.embed(faces, aligned=True) * cpu.embed(faces, aligned=True)).sum(1).min() > 0.999
    assert gpu.mask_verdicts(faces, aligned=True) == cpu.mask_verdicts(faces, aligned=True)
    a, b = gpu.unmask(faces[1], aligned=True), cpu.unmask(faces[1], aligned=True)
    assert a.mask_detected == b.mask_detected
    assert np.abs(a.restored.astype(float) - b.restored.astype(float)).mean() < 0.5


def test_a_killed_deterministic_run_resumes_to_the_same_losses(tiny_config, tiny_faces, monkeypatch):
    """Bit for bit on the CPU; on CUDA to rounding: PyTorch has no deterministic backward pass
    for bilinear upsampling or adaptive pooling there, and this model uses both."""
    extra = [stages(20, 20, 10), *on_device("train.deterministic=true"),
             "train.ckpt_every=5", "train.keep_checkpoints=1"]
    reference = Trainer(tiny_config(*extra, run="reference"), tiny_faces, progress=False).fit(resume=False)
    cfg = tiny_config(*extra)
    killed_after(cfg, tiny_faces, 27, monkeypatch)  # at synthesis step 8; the last checkpoint is synthesis step 5
    if DEVICE == "cuda":
        assert "cuda_rng" in ckpt.load_train_state(cfg.train.out_dir)
    resumed = Trainer(cfg, tiny_faces, progress=False).fit(resume=True)
    tail = [r for r in reference if r["stage"] == "joint" or (r["stage"] == "synthesis" and r["step"] > 5)]
    assert [(r["stage"], r["step"]) for r in resumed] == [(r["stage"], r["step"]) for r in tail]
    rtol = 1e-3 if DEVICE == "cuda" else 1e-5
    for a, b in zip(resumed, tail):
        for key in ("total", "pix", "id", "d_loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=rtol, err_msg=f"{a['stage']} {a['step']} {key}")


def test_compiled_training_matches_eager_training(tiny_config, tiny_faces):
    """torch.compile (train.compile) changes how the step runs, not what it computes."""
    extra = [stages(6, 6, 4), *on_device()]
    eager = Trainer(tiny_config(*extra, run="eager"), tiny_faces, progress=False).fit(resume=False)
    compiled_cfg = tiny_config(*extra, "train.compile=true", run="compiled")
    compiled = Trainer(compiled_cfg, tiny_faces, progress=False).fit(resume=False)
    assert_finite(compiled)
    assert [(r["stage"], r["step"]) for r in compiled] == [(r["stage"], r["step"]) for r in eager]
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a["total"], b["total"], rtol=0.05, err_msg=f"{a['stage']} {a['step']}")
