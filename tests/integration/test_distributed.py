"""Several processes on CPU (gloo): the sharded head, and DDP training against one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meer.inference import checkpoint as ckpt

from .conftest import TINY, stages

pytestmark = pytest.mark.dist
WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_sharded_head_matches_the_unsharded_head(tmp_path):
    torchrun(2, str(WORKER), "sharded_head", str(tmp_path / "report"))
    reports = [json.loads((tmp_path / f"report.{r}.json").read_text()) for r in range(2)]
    assert [r["shard"] for r in reports] == [[0, 6], [6, 11]]
    for r in reports:
        assert abs(r["loss"] - r["ref_loss"]) < 1e-5
        assert r["embedding_grad_err"] < 1e-5
        assert r["weight_grad_err"] < 1e-5
        assert r["full_weight_err"] == 0


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_two_process_training_matches_one_process(tmp_path):
    """Same global batch (2 x 8 vs 1 x 16), same seed. BatchNorm statistics are per process
    (SyncBatchNorm needs CUDA), so losses agree within a tolerance, not bit for bit."""
    common = [*TINY, stages(6, 4, 2), "data.source=synthetic", "data.synthetic_identities=16",
              "data.synthetic_images_per_identity=8", "model.input_size=32", "train.log_every=2"]
    sets = lambda extra: [x for item in common + extra for x in ("--set", item)]  # noqa: E731
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun(1, "-m", "meer.train", "--config", "tiny", "--quiet", *sets(["data.batch_size=16", f"train.out_dir={one}"]))
    torchrun(2, "-m", "meer.train", "--config", "tiny", "--quiet",
             *sets(["data.batch_size=8", "train.shard_centres=true", f"train.out_dir={two}"]))
    h1, h2 = history(one), history(two)
    assert [(r["stage"], r["step"]) for r in h1] == [(r["stage"], r["step"]) for r in h2]
    first1, first2 = h1[0], h2[0]
    assert first2["rec"] == pytest.approx(first1["rec"], rel=0.05)
    for a, b in zip(h1, h2):
        assert np.isfinite(b["total"])
        assert b["total"] == pytest.approx(a["total"], rel=0.25), (a["stage"], a["step"])
    # rank 0 alone wrote the checkpoint, with the full centre matrix gathered from both shards
    weights = ckpt.load_weights(two)
    assert weights["centres.weight"].shape == (16, 32)
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
