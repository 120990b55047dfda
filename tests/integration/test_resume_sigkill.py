"""A training process killed with SIGKILL resumes from its last checkpoint and, in deterministic
mode, reproduces the uninterrupted run's losses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TINY, stages

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def train_command(out: Path) -> list[str]:
    sets = [*TINY, stages(20, 20, 20), "data.synthetic_identities=16", "data.synthetic_images_per_identity=8",
            "train.deterministic=true", "train.ckpt_every=5", "train.log_every=5", f"train.out_dir={out}"]
    return [sys.executable, "-m", "meer", "train", "--config", "tiny", "--quiet",
            *[x for item in sets for x in ("--set", item)]]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_reproduces_losses(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(train_command(reference), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    process = subprocess.Popen(train_command(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not pointer.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = pointer.read_text().strip()
    assert killed_at != "step_00000060"
    logged_before_kill = len(records(run)) if (run / "history.jsonl").exists() else 0

    subprocess.run(train_command(run), check=True, env=env, capture_output=True)
    resumed = records(run)[logged_before_kill:]
    expected = {(r["stage"], r["step"]): r for r in records(reference)}
    assert resumed, "the resumed run logged nothing"
    assert (resumed[-1]["stage"], resumed[-1]["step"]) == ("joint", 20)
    for r in resumed:
        ref = expected[(r["stage"], r["step"])]
        for key in ("total", "rec", "pix", "d_loss"):
            if key in ref:
                assert r[key] == pytest.approx(ref[key], rel=1e-5), (r["stage"], r["step"], key)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000060"
