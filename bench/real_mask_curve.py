"""How what real-mask training buys grows with the number of people it learns from (issue 14).

    cd bench && python real_mask_curve.py --lfw-cache ../data/lfw112 \
        --rmfrd-train-cache ../data/rmfrd-train112-auto --out ../runs/real-masks-aug23 \
        --config configs/real-masks-head.yaml --set model.init=../src/meer/default_model ... \
        --variant "cutouts only:teacher.pull=0;data.real_masks={cutouts};data.real_mask_share=1.0" \
        --people 16 32 63 --seeds 0 1

The people and the training faces of ``real_mask_training.py`` (the same ``--seed`` split: the
rmfrd-train fit people, the LFW training split): every model sees the LFW training faces and
every fit person's *unmasked* photos; the ``--variant`` learns, besides, the real masked photos of
the first K fit people (a fixed order, so 16 of them are among 32), and through ``{cutouts}`` the
masks cut out of those photos only. K = 0 is the counterpart without real masks. So the curve
moves one thing: how many people's real masks the model learns from.

Validation only (no test data): the real masked photos of the validation people of rmfrd-train
against their unmasked ones. Per model: rank-1, rank-5, TAR at FAR 1e-2 and the mean reciprocal
rank; per K: the gain over K = 0 at the same training seed, averaged over seeds, with a 95%
interval from resampling the probes (paired: the same probes in both systems). Systems named as
``real_mask_training.py`` names them are reused from the same ``--out`` (K = 0 is its
``without real masks``, K = all its ``with real masks, VARIANT``); training resumes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lfw_benchmark import lfw_split, train_system
from real_mask_training import (
    CONFIG,
    counterpart_overrides,
    cutout_file,
    folder_name,
    identification_scores,
    masked_gallery,
    parse_variant,
    part_targets,
    seed_teacher_cache,
    split_people,
    with_cutouts,
)

from meer.data.cache import FaceCache
from meer.data.faceset import mix
from meer.eval.report import markdown_table
from meer.inference.checkpoint import load_model
from meer.io import atomic_write_text

log = logging.getLogger("real_mask_curve")

BOOTSTRAP = 10_000


def system_name(variant: str, overrides: list[str], people: int, all_people: int, seed: int) -> str:
    """The name ``real_mask_training.py`` gives the same system, so its runs are reused (and a
    counterpart trained with other settings is not)."""
    if people == 0:
        name = "without real masks" + (f" ({variant})" if counterpart_overrides(overrides) else "")
    elif people == all_people:
        name = f"with real masks, {variant}"
    else:
        name = f"with real masks of {people} people, {variant}"
    return name if seed == 0 else f"{name}, seed {seed}"


def gain_interval(with_ranks: np.ndarray, without_ranks: np.ndarray, seed: int) -> tuple[float, float]:
    """95% interval of the mean rank-1 gain (points), resampling probes; rows are training seeds."""
    hits = (with_ranks == 1).astype(float) - (without_ranks == 1).astype(float)  # [seeds, probes]
    draws = np.random.default_rng(seed).integers(0, hits.shape[1], size=(BOOTSTRAP, hits.shape[1]))
    means = hits[:, draws].mean(axis=(0, 2)) * 100
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw (112 px)")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--rmfrd-train-cache", required=True, help="meer prepare output of ../shared/data/rmfrd-train")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every system")
    parser.add_argument("--variant", required=True, help="the real-mask system, name:overrides (';' between)")
    parser.add_argument("--people", type=int, nargs="+", required=True,
                        help="how many fit people's real masked photos to learn from (0 is always trained)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed)")
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--val-people", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="the split's seed, as real_mask_training.py's")
    parser.add_argument("--step-scale", type=float, default=1.0)
    parser.add_argument("--reuse-teacher", nargs="*", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from meer.models.backbones import create_teacher

    out = Path(args.out)
    lfw_train = lfw_split(FaceCache.open(args.lfw_cache), Path(args.pairs), 112, args.val_identities, args.seed)[0]
    real_cache = FaceCache.open(args.rmfrd_train_cache)
    if not real_cache.masked.any():
        parser.error(f"{args.rmfrd_train_cache} flags no masked photo: prepare it again with this meer")
    fit_rows, val_rows = split_people(real_cache, args.val_people, args.seed)
    real_fit, real_val = real_cache.faces.subset(fit_rows), real_cache.faces.subset(val_rows)
    order = np.random.default_rng(args.seed).permutation(np.unique(real_fit.labels))
    all_people = len(order)
    if not all(0 < k <= all_people for k in args.people):
        parser.error(f"--people must lie in 1..{all_people} (the fit people)")
    counts = sorted({0, *args.people})

    teacher = create_teacher("sface")
    targets = torch.cat([part_targets(teacher, faces, out / f"teacher_{part}.safetensors", args.reuse_teacher)
                         for part, faces in (("lfw", lfw_train), ("rmfrd-train", real_fit))])
    variant, overrides = parse_variant(args.variant)
    results_path = out / "curve.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results |= {"variant": args.variant, "set": args.set, "order": order.tolist(), "val_probes": int(real_val.real_masked.sum())}
    systems = results.setdefault("systems", {})

    for seed in args.seeds:
        for people in counts:
            name = system_name(variant, overrides, people, all_people, seed)
            rows = ~real_fit.real_masked | np.isin(real_fit.labels, order[:people])  # unmasked, or learned
            real = real_fit.subset(np.flatnonzero(rows))
            faces = mix([lfw_train, real])
            keep = np.r_[np.ones(len(lfw_train), bool), rows]
            if people == 0:
                system_overrides = [*counterpart_overrides(overrides), "model.num_mask_types=4"]
            else:
                file = "cutouts_fit.safetensors" if people == all_people else f"cutouts_fit_{people}.safetensors"
                system_overrides = list(with_cutouts(overrides, lambda file=file, real=real: cutout_file(out / file, real)))
            if seed != 0:
                system_overrides.append(f"train.seed={seed}")
            run = out / folder_name(name)
            seed_teacher_cache(run, faces, targets[torch.from_numpy(keep)])
            checkpoint, seconds = train_system(str(args.config), run, faces, args.step_scale, (*args.set, *system_overrides))
            entry = systems.setdefault(name, {})
            entry |= {"people": people, "seed": seed, "checkpoint": str(checkpoint), "train_minutes": seconds / 60,
                      "real_masked_photos": int(real.real_masked.sum()), "overrides": system_overrides}
            if "val" not in entry:
                entry["val"] = identification_scores(*masked_gallery(load_model(checkpoint)[0], real_val))
            log.info("%s: rank-1 %.1f, rank-5 %.1f, TAR %.1f, MRR %.3f", name, *(entry["val"][k] for k in
                     ("rank1", "rank5", "tar_far_1e-2", "mrr")))
            atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    print_tables(results, variant, overrides, all_people, counts, args.seeds)


def print_tables(results: dict[str, Any], variant: str, overrides: list[str], all_people: int, counts: list[int],
                 seeds: list[int]) -> None:
    systems = results["systems"]
    rows = [{"people": k, "seed": s, "photos": e["real_masked_photos"], **e["val"]}
            for s in seeds for k in counts for e in [systems[system_name(variant, overrides, k, all_people, s)]]]
    print(f"\nvalidation, {results['val_probes']} real masked probes of the rmfrd-train validation people, per model:")
    print(markdown_table(rows, [
        ("people", "people with real masks", "{}"), ("photos", "real masked photos", "{}"), ("seed", "train.seed", "{}"),
        ("rank1", "rank-1 %", "{:.1f}"), ("rank5", "rank-5 %", "{:.1f}"), ("tar_far_1e-2", "TAR@FAR=1e-2 %", "{:.1f}"),
        ("mrr", "MRR", "{:.3f}")]))
    def scores(k: int) -> list[dict[str, Any]]:  # one per seed
        return [systems[system_name(variant, overrides, k, all_people, s)]["val"] for s in seeds]

    base = scores(0)
    curve = []
    for k in counts[1:]:
        entries = scores(k)
        low, high = gain_interval(np.array([e["probe_ranks"] for e in entries]),
                                  np.array([b["probe_ranks"] for b in base]), seed=k)
        gains = {m: np.mean([e[m] - b[m] for e, b in zip(entries, base, strict=True)])
                 for m in ("rank1", "rank5", "tar_far_1e-2", "mrr")}
        curve.append({"people": k, **gains, "interval": f"{low:+.1f} to {high:+.1f}"})
    print(f"\nmean gain over K = 0 at the same seed, over seeds {seeds}:")
    print(markdown_table(curve, [
        ("people", "people with real masks", "{}"), ("rank1", "rank-1 gain", "{:+.1f}"),
        ("interval", "rank-1 gain, 95% interval", "{}"), ("rank5", "rank-5 gain", "{:+.1f}"),
        ("tar_far_1e-2", "TAR gain", "{:+.1f}"), ("mrr", "MRR gain", "{:+.3f}")]))


if __name__ == "__main__":
    main()
