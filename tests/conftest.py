import os

# Before torch is imported: idle OpenMP threads sleep instead of spinning (see meer.cli.main).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

DATA = Path(os.environ.get("MEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    # One thread: tests are small, and a second thread only adds contention on a busy machine.
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; skips the test on a clone that has none."""
    if not (DATA / "lfw").is_dir():
        pytest.skip(f"real data not found at {DATA}")
    return DATA
