"""The small-scale benchmark of DESIGN.md, from one command:

    python bench/lfw_benchmark.py --lfw-cache /tmp/lfw112 --rmfrd-cache /tmp/rmfrd112

Trains the four systems (ArcFace without masks, ArcFace with mask augmentation, MEER without
the generator, MEER) with the same backbone, data and recogniser budget on the LFW identities
outside View-2 folds 6-10, then tests each on folds 6-10 (3,000 pairs, 5-fold accuracy) in
U-U / M-U / M-M and on rmfrd-dev (real masks: masked probes vs unmasked gallery).

Test data is never used for choices: a validation split of training identities (pairs built
from identities held out of training) is evaluated too, and the verification threshold stored
with each checkpoint is calibrated on it. Interrupted runs resume (the training runs resume
from their checkpoints; finished systems are only evaluated again).

The caches come from `meer prepare` (e.g. `meer prepare ../shared/data/lfw -o /tmp/lfw112`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from meer.calibration import Calibration, write_calibration
from meer.config import load_config
from meer.data.cache import FaceCache
from meer.data.faceset import FaceSet
from meer.data.protocols import masked_folder_protocol, read_lfw_pairs
from meer.eval.pairs import make_pairs
from meer.eval.real import masked_identification, resolve_pairs
from meer.eval.report import markdown_table, write_metrics_json
from meer.eval.suite import (
    VerificationSet,
    pooled_threshold,
    run_verification,
    verification_rows,
    write_restoration_grid,
)
from meer.io import atomic_write_text
from meer.train.checkpoint import latest_checkpoint
from meer.train.trainer import Trainer, load_model, versions

log = logging.getLogger("lfw_benchmark")

SYSTEMS = {
    "MEER": "lfw",
    "ArcFace + mask aug.": "lfw-arcface-maskaug",
    "MEER w/o generator": "lfw-meer-nogen",
    "ArcFace (no masks)": "lfw-arcface",
}
TEST_FOLDS = [5, 6, 7, 8, 9]  # View-2 folds 6-10, 0-based
MASK_SEED = 12345


def lfw_split(cache: FaceCache, pairs_file: Path, size: int, val_identities: int, seed: int):
    """Training faces (LFW people in no test-fold pair, minus a validation carve-out), the
    validation protocol and the test protocol (folds 6-10), all at ``size``."""
    pairs = read_lfw_pairs(pairs_file)
    test_mask = np.isin(pairs.fold, TEST_FOLDS)
    test_people = {k.split("/")[0] for k, m in zip(pairs.first + pairs.second, np.tile(test_mask, 2)) if m}
    names = np.array(cache.faces.names)
    person = names[cache.faces.labels]
    train_rows = np.flatnonzero(~np.isin(person, list(test_people)))
    labels = cache.faces.labels[train_rows]
    ids, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    val_ids = rng.choice(ids[counts >= 2], size=val_identities, replace=False)
    val_rows = train_rows[np.isin(labels, val_ids)]
    fit_rows = train_rows[~np.isin(labels, val_ids)]
    train = cache.faces.subset(fit_rows).resized(size)
    val_faces = cache.faces.subset(val_rows).resized(size)
    val = VerificationSet("val", val_faces, make_pairs(val_faces.labels, folds=5, per_fold=100, seed=seed))
    test_faces, test_pairs = resolve_pairs(cache, pairs, TEST_FOLDS)
    test = VerificationSet("lfw-6-10", test_faces, test_pairs)
    counts = {"train_images": len(train), "train_identities": int(len(np.unique(train.labels))),
              "val_images": len(val_faces), "val_identities": int(len(val_ids)), "val_pairs": len(val.pairs),
              "test_images": len(test_faces), "test_pairs": len(test_pairs)}
    return train, val, test, counts


def train_system(config: str, out: Path, train: FaceSet, step_scale: float) -> tuple[Path, float]:
    cfg = load_config(config, [f"train.out_dir={out}"])
    for stage in cfg.stages:
        stage.steps = max(1, round(stage.steps * step_scale))
    tick = time.perf_counter()
    Trainer(cfg, train, progress=True).fit(resume=True)
    return latest_checkpoint(out), time.perf_counter() - tick


def evaluate_system(checkpoint: Path, val: VerificationSet, test: VerificationSet, rmfrd) -> dict[str, Any]:
    model, cfg, _ = load_model(checkpoint)
    types = tuple(cfg.data.mask_types)
    val_result = run_verification(model, val, MASK_SEED, types)
    threshold, accuracy = pooled_threshold(val_result, val, "M-U")
    write_calibration(checkpoint, Calibration(threshold, "lfw-bench validation identities, M-U", accuracy, "M-U"))
    test_result = run_verification(model, test, MASK_SEED, types, progress=True)
    out = {"val": val_result, "test": test_result}
    if rmfrd is not None:
        cache, protocol = rmfrd
        out["rmfrd"] = masked_identification(model, cache, protocol)
    return out


def row(name: str, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    r = verification_rows(name, result["test"])
    r["val_mu"] = result["val"]["verification"]["M-U"].accuracy_mean * 100
    if "rmfrd" in result:
        r["rmfrd_r1"] = result["rmfrd"][0].rank_accuracy[1] * 100
        r["rmfrd_r5"] = result["rmfrd"][0].rank_accuracy[5] * 100
    r["train_min"] = seconds / 60
    return r


COLUMNS = [
    ("name", "System", "{}"),
    ("acc_U-U", "U-U acc %", "{:.2f}"), ("std_U-U", "±", "{:.2f}"),
    ("acc_M-U", "M-U acc %", "{:.2f}"), ("std_M-U", "±", "{:.2f}"),
    ("acc_M-M", "M-M acc %", "{:.2f}"), ("std_M-M", "±", "{:.2f}"),
    ("tar2", "M-U TAR@FAR=1e-2 %", "{:.1f}"),
    ("rmfrd_r1", "rmfrd-dev rank-1 %", "{:.1f}"), ("rmfrd_r5", "rank-5 %", "{:.1f}"),
    ("psnr", "PSNR mask dB", "{:.2f}"), ("ssim", "SSIM mask", "{:.3f}"), ("idsim", "ID sim", "{:.3f}"),
    ("val_mu", "val M-U acc %", "{:.2f}"), ("train_min", "train min", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--rmfrd-cache", help="meer prepare output of ../shared/data/rmfrd-dev")
    parser.add_argument("--rmfrd-root", default="../shared/data/rmfrd-dev")
    parser.add_argument("--out", default="runs/lfw-bench")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    parser.add_argument("--grid", default="docs/images/lfw_restorations.png", help="restored LFW test faces")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    out = Path(args.out)
    size = load_config(SYSTEMS["MEER"]).model.input_size
    train, val, test, counts = lfw_split(FaceCache.open(args.lfw_cache), Path(args.pairs), size, args.val_identities,
                                         args.seed)
    log.info("split: %s", counts)
    rmfrd = None
    if args.rmfrd_cache:
        rmfrd = (FaceCache.open(args.rmfrd_cache), masked_folder_protocol(args.rmfrd_root))

    rows, metrics = [], {"split": counts, "versions": versions(), "seed": args.seed, "mask_seed": MASK_SEED,
                         "step_scale": args.step_scale, "systems": {}}
    for name in args.systems:
        log.info("=== %s (%s)", name, SYSTEMS[name])
        checkpoint, seconds = train_system(SYSTEMS[name], out / SYSTEMS[name], train, args.step_scale)
        result = evaluate_system(checkpoint, val, test, rmfrd)
        rows.append(row(name, result, seconds))
        metrics["systems"][name] = {
            "checkpoint": str(checkpoint),
            "train_seconds_this_invocation": seconds,
            "val": {k: v.to_dict() for k, v in result["val"]["verification"].items()},
            "test": {k: v.to_dict() for k, v in result["test"]["verification"].items()},
            "synthesis": result["test"]["synthesis"].to_dict() if result["test"]["synthesis"] else None,
            "rmfrd": ({**result["rmfrd"][0].to_dict(), "counts": result["rmfrd"][1]} if "rmfrd" in result else None),
        }
        if result["test"]["synthesis"] is not None and args.grid:
            write_restoration_grid(Path(args.grid), result["test"], rows=8)
        table = markdown_table(rows, COLUMNS)
        write_metrics_json(out / "results.json", metrics)
        atomic_write_text(out / "table.md", table + "\n")
        print(table, flush=True)


if __name__ == "__main__":
    main()
