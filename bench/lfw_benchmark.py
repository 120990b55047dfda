"""The small-scale benchmark (docs/design.md, Protocols), from one command:

    python bench/lfw_benchmark.py --lfw-cache /tmp/lfw112 --rmfrd-cache /tmp/rmfrd112f

and its teacher-guided suite (issue 7: dlib's ResNet as the peer to beat and as the teacher),
on caches in dlib's framing (``meer prepare ... --size 150 --template dlib``):

    python bench/lfw_benchmark.py --suite teacher --lfw-cache /tmp/lfw150d --rmfrd-cache /tmp/rmfrd150f \
        --out runs/lfw-teacher

Trains the four systems (ArcFace without masks, ArcFace with mask augmentation, MEER without
the generator, MEER) with the same backbone, data and recogniser budget on the LFW identities
outside View-2 folds 6-10, then tests each on folds 6-10 (3,000 pairs, 5-fold accuracy) in
U-U / M-U / M-M and on rmfrd-dev (real masks: masked probes vs unmasked gallery).

Test data is never used for choices: a validation split of training identities (pairs built
from identities held out of training) is evaluated too, and the verification threshold stored
with each checkpoint is calibrated on it. Interrupted runs resume (the training runs resume
from their checkpoints; finished systems are only evaluated again).

The caches come from `meer prepare` (e.g. `meer prepare ../shared/data/lfw -o /tmp/lfw112`;
rmfrd-dev's tight crops with `--no-face frame`, see BENCHMARKS.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lfw_photos import TEST_FOLDS

from meer.calibration import Calibration, write_calibration
from meer.config import load_config
from meer.data.cache import FaceCache
from meer.data.faceset import FaceSet
from meer.data.protocols import masked_folder_protocol, read_lfw_pairs
from meer.eval.masked_copies import render_test_masks
from meer.eval.pairs import make_pairs
from meer.eval.real import (
    IdentificationCounts,
    MaskedIdentification,
    masked_identification,
    resolve_pairs,
)
from meer.eval.report import markdown_table, write_metrics_json
from meer.eval.suite import (
    ProtocolResult,
    VerificationSet,
    pooled_threshold,
    run_verification,
    verification_rows,
    write_restoration_grid,
)
from meer.inference.checkpoint import latest_checkpoint, load_model
from meer.io import atomic_write, atomic_write_text
from meer.train.trainer import Trainer, versions

log = logging.getLogger("lfw_benchmark")

CONFIGS = Path(__file__).resolve().parent / "configs"
SYSTEMS = {
    "MEER": str(CONFIGS / "lfw.yaml"),
    "MEER, full-rate recogniser": str(CONFIGS / "lfw-meer-fullrate.yaml"),
    "ArcFace + mask aug.": str(CONFIGS / "lfw-arcface-maskaug.yaml"),
    "MEER w/o generator": str(CONFIGS / "lfw-meer-nogen.yaml"),
    "ArcFace (no masks)": str(CONFIGS / "lfw-arcface.yaml"),
}
TEACHER_SYSTEMS = {
    "Teacher-guided MEER": str(CONFIGS / "lfw-teacher.yaml"),
    "Teacher-guided ArcFace + mask aug.": str(CONFIGS / "lfw-teacher-arcface-maskaug.yaml"),
}
SFACE_SYSTEMS = {
    "MEER on SFace": str(CONFIGS / "lfw-sface.yaml"),
    "SFace + mask aug. (fine-tuned)": str(CONFIGS / "lfw-sface-arcface-maskaug.yaml"),
    "MEER on SFace w/o generator": str(CONFIGS / "lfw-sface-nogen.yaml"),
}
SUITES = {"small": SYSTEMS, "teacher": TEACHER_SYSTEMS, "sface": SFACE_SYSTEMS}
RAW_SFACE = "SFace (no training)"
PEER = "dlib (peer: its own detector, alignment, descriptor)"
PORT = "dlib ResNet, ported, on our alignment (no training)"
MASK_SEED = 12345


def lfw_split(cache: FaceCache, pairs_file: Path, size: int, val_identities: int, seed: int):
    """Training faces (LFW people in no test-fold pair, minus a validation carve-out), the
    validation protocol and the test protocol (folds 6-10), all at ``size``."""
    pairs = read_lfw_pairs(pairs_file)
    test_people = pairs.people(TEST_FOLDS)
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


def train_system(config: str, out: Path, train: FaceSet, step_scale: float,
                 overrides: tuple[str, ...] = ()) -> tuple[Path, float]:
    """Train (or finish training) one system; returns its checkpoint and its training seconds,
    summed over the invocations that trained it (kept in ``train_seconds.json``)."""
    cfg = load_config(config, [f"train.out_dir={out}", *overrides])
    for stage in cfg.stages:
        stage.steps = max(1, round(stage.steps * step_scale))
    teacher_cache = out.parent / "teacher_embeddings.safetensors"
    if cfg.teacher.kind and teacher_cache.exists() and not (out / teacher_cache.name).exists():
        # systems with the same teacher and training faces share its targets (checked by fingerprint)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(teacher_cache, out / teacher_cache.name)
    record = out / "train_seconds.json"
    seconds = json.loads(record.read_text())["seconds"] if record.exists() else 0.0
    tick = time.perf_counter()
    Trainer(cfg, train, progress=True).fit(resume=True)
    seconds += time.perf_counter() - tick
    atomic_write_text(record, json.dumps({"seconds": seconds}) + "\n")
    if cfg.teacher.kind and not teacher_cache.exists():
        shutil.copy(out / teacher_cache.name, teacher_cache)
    return latest_checkpoint(out), seconds


@dataclass
class SystemResult:
    """One row of the benchmark: the test protocol, the validation protocol (its threshold is
    the one stored with the checkpoint), the RMFRD identification, and for the peer where its
    faces came from."""

    test: ProtocolResult
    val: ProtocolResult | None = None
    rmfrd: MaskedIdentification | None = None
    sources: dict[str, dict[str, int]] | None = None


def evaluate_system(checkpoint: Path, val: VerificationSet, test: VerificationSet, rmfrd) -> SystemResult:
    model, cfg, _ = load_model(checkpoint)
    return evaluate_model(model, tuple(cfg.data.mask_types), val, test, rmfrd, checkpoint)


def evaluate_model(model, types: tuple[str, ...], val: VerificationSet, test: VerificationSet, rmfrd,
                   checkpoint: Path | None = None) -> SystemResult:
    val_result = run_verification(model, val, MASK_SEED, types)
    threshold, accuracy = pooled_threshold(val_result, val, "M-U")
    if checkpoint is not None:
        write_calibration(checkpoint, Calibration(threshold, "lfw-bench validation identities, M-U", accuracy, "M-U"))
    test_result = run_verification(model, test, MASK_SEED, types, progress=True)
    out = SystemResult(test_result, val_result)
    if rmfrd is not None:
        cache, protocol = rmfrd
        out.rmfrd = masked_identification(model, cache, protocol)
    return out


def evaluate_peer(out: Path, cache: FaceCache, rows: np.ndarray, test: VerificationSet, lfw_root: Path,
                  rmfrd, rmfrd_root: Path, workers: int) -> dict[str, SystemResult]:
    """dlib's own pipeline on the original photos: the test masks (rendered on the crops of the
    dlib-template cache, as for every other row) are pasted back into each photo first.
    Descriptors are kept in ``out/descriptors.npz``; a rerun only scores them again."""
    from peers.dlib import describe_photos

    from meer.eval.evaluate import Embeddings, verify_settings
    from meer.eval.identification import identify

    store = out / "descriptors.npz"
    if not store.exists():
        if cache.matrices is None:
            raise SystemExit(f"{cache.path} has no alignment matrices; prepare it again with this meer")
        masked = render_test_masks(test.faces, MASK_SEED, ("surgical", "n95", "cloth"))
        tasks = [(lfw_root / cache.paths[r], cache.matrices[r], masked.images[i], masked.occlusion[i], cache.faces.size)
                 for i, r in enumerate(rows)]
        results = describe_photos(tasks, workers, progress=True)
        arrays = {"clean": np.stack([r[0] for r in results]), "masked": np.stack([r[2] for r in results]),
                  "clean_source": np.array([r[1] for r in results]), "masked_source": np.array([r[3] for r in results])}
        if rmfrd is not None:
            protocol = rmfrd[1]
            keys = protocol.probes + protocol.gallery
            found = describe_photos([(rmfrd_root / k, None, None, None, 0) for k in keys], workers, progress=True)
            arrays["rmfrd"] = np.stack([r[0] for r in found])
            arrays["rmfrd_source"] = np.array([r[1] for r in found])
        out.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(store, write)
    arrays = np.load(store)
    results = {}
    for metric in ("cosine", "euclidean"):
        embeddings = Embeddings(arrays["clean"], arrays["masked"])
        sources = {k: dict(zip(*np.unique(arrays[k], return_counts=True))) for k in arrays if k.endswith("source")}
        result = SystemResult(ProtocolResult(verify_settings(embeddings, test.pairs, metric), embeddings),
                              sources={k: {str(a): int(b) for a, b in v.items()} for k, v in sources.items()})
        if rmfrd is not None:
            protocol = rmfrd[1]
            probes, gallery = arrays["rmfrd"][: len(protocol.probes)], arrays["rmfrd"][len(protocol.probes):]
            keep = np.isin(protocol.probe_labels, protocol.gallery_labels)
            result.rmfrd = MaskedIdentification(
                identify(probes[keep], protocol.probe_labels[keep], gallery, protocol.gallery_labels, metric=metric),
                IdentificationCounts(probes=int(keep.sum()), gallery=len(protocol.gallery)),
            )
        results[metric] = result
    return results


def row(name: str, result: SystemResult, seconds: float | None) -> dict[str, Any]:
    r = verification_rows(name, result.test)
    r["val_mu"] = result.val.verification["M-U"].accuracy_mean * 100 if result.val is not None else None
    if result.rmfrd is not None:
        r["rmfrd_r1"] = result.rmfrd.result.rank_accuracy[1] * 100
        r["rmfrd_r5"] = result.rmfrd.result.rank_accuracy[5] * 100
        loo = result.rmfrd.counts.unmasked_loo_rank1
        r["rmfrd_loo"] = (loo if loo is not None else float("nan")) * 100
    r["train_min"] = seconds / 60 if seconds is not None else None
    return r


COLUMNS = [
    ("name", "System", "{}"),
    ("acc_U-U", "U-U acc %", "{:.2f}"), ("std_U-U", "±", "{:.2f}"),
    ("acc_M-U", "M-U acc %", "{:.2f}"), ("std_M-U", "±", "{:.2f}"),
    ("acc_M-M", "M-M acc %", "{:.2f}"), ("std_M-M", "±", "{:.2f}"),
    ("tar2", "M-U TAR@FAR=1e-2 %", "{:.1f}"),
    ("rmfrd_r1", "rmfrd-dev rank-1 %", "{:.1f}"), ("rmfrd_r5", "rank-5 %", "{:.1f}"),
    ("rmfrd_loo", "rmfrd-dev unmasked LOO rank-1 %", "{:.1f}"),
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
    parser.add_argument("--suite", default="small", choices=list(SUITES),
                        help="small: the four from-scratch systems; teacher: dlib peer + teacher-guided systems; "
                        "sface: raw SFace + systems built on it")
    parser.add_argument("--systems", nargs="*", help="a subset of the suite's trained systems (default: all)")
    parser.add_argument("--skip-reference", action="store_true",
                        help="only the trained systems: no peer / untrained rows (e.g. an ablation run)")
    parser.add_argument("--lfw-root", default="../shared/data/lfw", help="LFW photos (the dlib peer reads them)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the dlib peer")
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    parser.add_argument("--grid", help="restored LFW test faces (default: docs/images/lfw_restorations.png, "
                        "lfw_teacher_restorations.png for the teacher suite)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    systems = SUITES[args.suite]
    unknown = sorted(set(args.systems or []) - set(systems))
    if unknown:
        parser.error(f"unknown system {unknown[0]!r} for suite {args.suite}; choose from {sorted(systems)}")
    out = Path(args.out)
    if args.grid is None:
        args.grid = f"docs/images/lfw{'' if args.suite == 'small' else '_' + args.suite}_restorations.png"
    model_cfg = load_config(next(iter(systems.values()))).model
    size = model_cfg.input_size
    lfw = FaceCache.open(args.lfw_cache)
    if args.suite != "small" and (lfw.template != model_cfg.alignment or lfw.faces.size != size):
        parser.error(f"the {args.suite} suite needs a {size}px {model_cfg.alignment}-template cache "
                     f"(meer prepare --size {size} --template {model_cfg.alignment})")
    train, val, test, counts = lfw_split(lfw, Path(args.pairs), size, args.val_identities, args.seed)
    log.info("split: %s", counts)
    rmfrd = None
    if args.rmfrd_cache:
        rmfrd = (FaceCache.open(args.rmfrd_cache), masked_folder_protocol(args.rmfrd_root))

    rows, metrics = [], {"split": counts, "versions": versions(), "seed": args.seed, "mask_seed": MASK_SEED,
                         "step_scale": args.step_scale, "systems": {}}
    if args.suite == "teacher" and not args.skip_reference:
        from meer.eval.real import pair_rows
        from meer.models.meer import MEER

        log.info("=== %s", PEER)
        test_rows = pair_rows(lfw, read_lfw_pairs(Path(args.pairs)), TEST_FOLDS)
        peer = evaluate_peer(out / "dlib-peer", lfw, test_rows, test, Path(args.lfw_root), rmfrd,
                             Path(args.rmfrd_root), args.workers)
        for metric, result in peer.items():
            name = f"{PEER}, {metric}"
            rows.append(row(name, result, None))
            metrics["systems"][name] = summary(result, None, None) | {"face_sources": result.sources}
        log.info("=== %s", PORT)
        port = MEER("dlib_resnet", input_size=size, embedding_dim=128, decouple=False, generator=False,
                    pretrained="dlib").eval()
        result = evaluate_model(port, ("surgical", "n95", "cloth"), val, test, rmfrd)
        rows.append(row(PORT, result, None))
        metrics["systems"][PORT] = summary(result, None, None)
    if args.suite == "sface" and not args.skip_reference:
        from meer.models.meer import MEER

        log.info("=== %s", RAW_SFACE)
        raw = MEER("sface", input_size=size, embedding_dim=128, decouple=False, generator=False, pretrained="sface").eval()
        result = evaluate_model(raw, ("surgical", "n95", "cloth"), val, test, rmfrd)
        rows.append(row(RAW_SFACE, result, None))
        metrics["systems"][RAW_SFACE] = summary(result, None, None)
    for name in args.systems or list(systems):
        log.info("=== %s (%s)", name, systems[name])
        checkpoint, seconds = train_system(systems[name], out / Path(systems[name]).stem, train, args.step_scale)
        result = evaluate_system(checkpoint, val, test, rmfrd)
        rows.append(row(name, result, seconds))
        metrics["systems"][name] = summary(result, checkpoint, seconds)
        if result.test.synthesis is not None and args.grid:
            write_restoration_grid(Path(args.grid), result.test, rows=8)
        table = markdown_table(rows, COLUMNS)
        write_metrics_json(out / "results.json", metrics)
        atomic_write_text(out / "table.md", table + "\n")
        print(table, flush=True)


def summary(result: SystemResult, checkpoint: Path | None, seconds: float | None) -> dict[str, Any]:
    """A system's entry in results.json."""
    test = result.test.to_dict()
    return {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "train_seconds": seconds,
        "val": result.val.to_dict()["verification"] if result.val is not None else None,
        "test": test["verification"],
        "synthesis": test.get("synthesis"),
        "rmfrd": result.rmfrd.to_dict() if result.rmfrd is not None else None,
    }


if __name__ == "__main__":
    main()
