import numpy as np
import pytest

from meer.config import load_config
from meer.data.synthetic import SyntheticFaces
from meer.train.trainer import Trainer

TINY = [
    "model.width=0.125", "model.input_size=32", "model.embedding_dim=32", "model.generator_width=8",
    "model.discriminator_width=8", "model.discriminator_layers=2", "data.batch_size=16", "data.workers=0",
    "train.log_every=5", "train.ckpt_every=10", "optim.warmup_steps=0", "optim.schedule=constant",
]


def stages(recognition=20, synthesis=20, joint=10):
    return (
        "stages=["
        f"{{name: recognition, steps: {recognition}, train: [backbone, decouple, centres], losses: [recognition]}},"
        f"{{name: synthesis, steps: {synthesis}, train: [generator, discriminator], losses: [synthesis]}},"
        f"{{name: joint, steps: {joint}, train: [backbone, decouple, centres, generator, discriminator],"
        " losses: [recognition, synthesis, feedback], lr_scale: 0.2}]"
    )


@pytest.fixture(scope="session")
def tiny_faces():
    return SyntheticFaces(num_identities=16, images_per_identity=8, size=32, seed=3).generate()


@pytest.fixture
def tiny_config(tmp_path):
    def make(*extra, run="run"):
        return load_config("tiny", [*TINY, f"train.out_dir={tmp_path / run}", *extra])

    return make


def loss_means(history, stage, key, first=True, n=2):
    values = [r[key] for r in history if r["stage"] == stage]
    chosen = values[:n] if first else values[-n:]
    return float(np.mean(chosen))


def killed_after(cfg, faces, steps: int, monkeypatch) -> None:
    """Train ``cfg`` from scratch and stop it after ``steps`` optimiser steps, as a kill would:
    what was checkpointed by then is all that survives."""
    original, calls = Trainer.train_step, {"n": 0}

    def crash(self, state, batches):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        return original(self, state, batches)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, faces, progress=False).fit(resume=False)
    monkeypatch.setattr(Trainer, "train_step", original)
