"""Real masked photos as training data (issue 14): the same model with and without them.

    python bench/real_mask_training.py --lfw-cache data/lfw112 --rmfrd-train-cache data/rmfrd-train112 \
        --rmfrd-cache data/rmfrd112 --out runs/real-masks

Every system is MEER on SFace without the generator (``bench/configs/real-masks.yaml``; with
``--config bench/configs/real-masks-head.yaml`` the shipped model, fine-tuned from its own weights
by ``model.init``), trained with meer's surgical and N95 masks only (cloth is held out for the
test) on two sources mixed 70 / 30 per batch:

* LFW: the people in no View-2 test pair (folds 6-10), minus a validation carve-out;
* rmfrd-train: a real-mask collection (training data), minus validation people.

``without real masks`` sees only the *unmasked* rmfrd-train photos (with synthetic masks like
every other face); ``with real masks`` also sees the masked ones, flagged by ``meer prepare``
(class "real", no clean twin), in each of the ``--variants`` (by default the teacher's pull,
``teacher.pull``: masked photo -> the teacher's mean of the same person's unmasked photos, at 0
and 5; ``data.real_masks={cutouts}`` in a variant also pastes the masks cut out of the training
people's real masked photos on other training faces, see ``meer cutouts``). The variant is chosen on validation only: rank-1 of the validation people's masked
photos against their unmasked ones (rmfrd-train), among the variants whose mask classifier finds
at least 90% of those masks (it picks the verification threshold); then the same model without
the real masked photos is trained with the chosen variant's settings. With ``--refit-all-people``
the chosen system and that counterpart are trained again, after the choice, on every rmfrd-train
person (the validation people too), and those two are tested.

Test (never used for a choice): rmfrd-dev masked probes against its unmasked gallery (rank-1,
rank-5, TAR at FAR 1e-2 over every probe-gallery image pair), rmfrd-dev unmasked leave-one-out
rank-1, and LFW folds 6-10 in U-U / M-U / M-M with the benchmark's masks (all three kinds, as in
BENCHMARKS.md) and with cloth masks only (the held-out kind), k-fold accuracy and the accuracy at
per-setting thresholds chosen on LFW validation pairs (what a user gets). Raw SFace (no training)
is evaluated the same way as the reference; ``--also-rmfrd-cache`` scores rmfrd-dev again from
another preparation of its photos (e.g. another ``--detector``). ``--extra-seeds`` trains the
final pair again at other training seeds and scores them on rmfrd-dev, with each seed's difference
and the mean (the seed alone moves rank-1 by several points). Results go to ``--out``;
interrupted training resumes.
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
from fit_mask_head import rates
from lfw_benchmark import CONFIGS, MASK_SEED, lfw_split, train_system
from sklearn.metrics import roc_curve

from meer.calibration import Calibration
from meer.data.cache import FaceCache
from meer.data.faceset import FaceSet, mix
from meer.data.protocols import masked_folder_protocol
from meer.eval.evaluate import Embeddings, accuracy_at_thresholds, best_thresholds, verify_settings
from meer.eval.identification import identify, leave_one_out_rank1
from meer.eval.masked_copies import render_test_masks
from meer.eval.pairs import SETTINGS
from meer.eval.report import markdown_table
from meer.eval.suite import VerificationSet, run_verification
from meer.eval.verification import tar_at_far
from meer.inference.batched import embed_images, mask_classes
from meer.inference.checkpoint import load_model
from meer.io import atomic_write_text
from meer.train.teacher import CACHE_FILE, embed_both_ways, read_targets, write_targets
from meer.train.trainer import contiguous_labels, versions

log = logging.getLogger("real_mask_training")

CONFIG = CONFIGS / "real-masks.yaml"
ALL_KINDS = ("surgical", "n95", "cloth")
HELD_OUT = ("cloth",)
MIN_MASKS_FOUND = 90.0  # % of the validation people's real masks the mask classifier must find


def split_people(cache: FaceCache, val_people: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training people and of ``val_people`` validation people (identity-disjoint)."""
    labels = cache.faces.labels
    people = np.unique(labels)
    val = np.random.default_rng(seed).choice(people, size=val_people, replace=False)
    return np.flatnonzero(~np.isin(labels, val)), np.flatnonzero(np.isin(labels, val))


def masked_gallery(model, faces: FaceSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of the real masked photos (probes) and of the unmasked ones (gallery), with labels."""
    real = faces.real_masked
    emb = embed_images(model, np.asarray(faces.images), 64)
    return emb[real], faces.labels[real], emb[~real], faces.labels[~real]


def identification_scores(probes, probe_labels, gallery, gallery_labels) -> dict[str, Any]:
    """Rank-1 / rank-5 and the mean reciprocal rank over identities, each probe's rank (for paired
    comparisons), and TAR at FAR 1e-2 over every probe-gallery image pair."""
    result = identify(probes, probe_labels, gallery, gallery_labels, ranks=(1, 5))
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = (p @ g.T).ravel()
    same = (probe_labels[:, None] == gallery_labels[None, :]).ravel()
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    return {"rank1": result.rank_accuracy[1] * 100, "rank5": result.rank_accuracy[5] * 100,
            "mrr": float(np.mean(1.0 / result.probe_ranks)), "probe_ranks": result.probe_ranks.tolist(),
            "tar_far_1e-2": tar_at_far(fpr, tpr, 1e-2, int((~same).sum())) * 100,
            "probes": int(len(probes)), "gallery_identities": result.num_gallery_identities}


def rmfrd_dev(model, cache: FaceCache, root: Path) -> dict[str, float]:
    protocol = masked_folder_protocol(root)
    probe_rows, gallery_rows = cache.rows(protocol.probes), cache.rows(protocol.gallery)
    probe_ok, gallery_ok = probe_rows >= 0, gallery_rows >= 0
    probe_ok &= np.isin(protocol.probe_labels, protocol.gallery_labels[gallery_ok])
    images = np.asarray(cache.faces.images)
    probes = embed_images(model, images[probe_rows[probe_ok]], 64)
    gallery = embed_images(model, images[gallery_rows[gallery_ok]], 64)
    gallery_labels = protocol.gallery_labels[gallery_ok]
    out = identification_scores(probes, protocol.probe_labels[probe_ok], gallery, gallery_labels)
    out["unmasked_loo_rank1"] = leave_one_out_rank1(gallery, gallery_labels) * 100
    return out


def lfw_scores(model, val: VerificationSet, test: VerificationSet) -> dict[str, Any]:
    """Per mask protocol (all kinds / held-out kind): k-fold accuracy on the test folds and the
    accuracy at per-setting thresholds chosen on the validation pairs. Clean faces embedded once."""
    clean = {p.name: embed_images(model, np.asarray(p.faces.images), 64, progress=True, desc=f"{p.name} unmasked")
             for p in (val, test)}
    out = {}
    for protocol, kinds in (("lfw_all_kinds", ALL_KINDS), ("lfw_held_out", HELD_OUT)):
        emb = {}
        for p in (val, test):
            masked = render_test_masks(p.faces, MASK_SEED, kinds).images
            emb[p.name] = Embeddings(clean[p.name], embed_images(model, masked, 64, progress=True,
                                                                 desc=f"{p.name} {'+'.join(kinds)}"))
        chosen = best_thresholds(emb[val.name], val.pairs)
        stored = Calibration.from_settings(chosen, "validation pairs, per setting")
        at_stored = accuracy_at_thresholds(emb[test.name], test.pairs, {s: stored.threshold_for(s) for s in SETTINGS})
        kfold = verify_settings(emb[test.name], test.pairs)
        out[protocol] = {
            "kinds": list(kinds),
            "thresholds": {s: chosen[s][0] for s in SETTINGS},
            "val_best": {s: chosen[s][1] * 100 for s in SETTINGS},
            "kfold": {s: kfold[s].accuracy_mean * 100 for s in SETTINGS},
            "kfold_std": {s: kfold[s].accuracy_std * 100 for s in SETTINGS},
            "stored": {s: at_stored[s] * 100 for s in SETTINGS},
            "tar_mu": kfold["M-U"].tar_at_far[1e-2] * 100,
        }
    return out


def seed_teacher_cache(run_dir: Path, faces: FaceSet, targets) -> None:
    """Write the teacher's targets of ``faces`` where the trainer looks for them (it checks the
    fingerprint), so that the systems share one teacher pass."""
    if not (run_dir / CACHE_FILE).exists():
        write_targets(run_dir / CACHE_FILE, contiguous_labels(faces), targets)


def part_targets(teacher, faces: FaceSet, path: Path, reuse: list[str]):
    """The teacher's targets of one source's faces: read from ``path`` or any ``reuse`` file whose
    fingerprint matches (e.g. a run of ``lfw_benchmark.py --suite sface`` on the same split)."""
    faces = contiguous_labels(faces)  # as the trainer sees its faces
    for candidate in [path, *map(Path, reuse)]:
        targets = read_targets(candidate, faces)
        if targets is not None:
            log.info("teacher targets of %d faces from %s", len(faces), candidate)
            return targets
    targets = embed_both_ways(teacher, faces.images, 64, progress=True)
    write_targets(path, faces, targets)
    return targets


def folder_name(system: str) -> str:
    """The run folder of a system: ``"with real masks, heads x10"`` -> ``with-real-masks-heads-x10``."""
    return system.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw (112 px)")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--rmfrd-train-cache", required=True,
                        help="meer prepare output of ../shared/data/rmfrd-train (--no-face frame; masked_* flagged)")
    parser.add_argument("--rmfrd-cache", required=True, help="meer prepare output of ../shared/data/rmfrd-dev")
    parser.add_argument("--rmfrd-root", default="../shared/data/rmfrd-dev")
    parser.add_argument("--also-rmfrd-cache", action="append", default=[], metavar="PATH",
                        help="also score the tested models on this preparation of the same rmfrd-dev photos "
                             "(e.g. another --detector); repeatable")
    parser.add_argument("--out", default="runs/real-masks")
    parser.add_argument("--config", type=Path, default=CONFIG,
                        help="every system's config (default: %(default)s; real-masks-head.yaml fine-tunes the "
                             "shipped model's embedding head alone)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every system (e.g. model.init=../src/meer/default_model)")
    parser.add_argument("--variants", nargs="+", default=["pull 0:teacher.pull=0", "pull 5:teacher.pull=5"],
                        help="the real-mask systems to choose from on validation, each name:overrides (';' between)")
    parser.add_argument("--val-identities", type=int, default=120, help="LFW validation identities")
    parser.add_argument("--val-people", type=int, default=25, help="rmfrd-train validation people")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-scale", type=float, default=1.0)
    parser.add_argument("--reuse-teacher", nargs="*", default=[],
                        help="teacher_embeddings.safetensors files of earlier runs (used where the faces match)")
    parser.add_argument("--skip-test", action="store_true", help="stop after the validation choice")
    parser.add_argument("--refit-all-people", action="store_true",
                        help="after the validation choice, train the chosen system and its counterpart again on "
                             "every rmfrd-train person (validation people included) and test those")
    parser.add_argument("--extra-seeds", type=int, nargs="+", default=[], metavar="SEED",
                        help="with --refit-all-people: train the final pair again with these training seeds "
                             "(train.seed) and score them on rmfrd-dev, to see how far the draw alone moves it")
    args = parser.parse_args()
    if args.extra_seeds and not args.refit_all_people:
        parser.error("--extra-seeds needs --refit-all-people")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from meer.models.backbones import create_teacher
    from meer.models.meer import MEER

    out = Path(args.out)
    lfw = FaceCache.open(args.lfw_cache)
    lfw_train, val, test, counts = lfw_split(lfw, Path(args.pairs), 112, args.val_identities, args.seed)
    real_cache = FaceCache.open(args.rmfrd_train_cache)
    if not real_cache.masked.any():
        parser.error(f"{args.rmfrd_train_cache} flags no masked photo: prepare it again with this meer")
    fit_rows, val_rows = split_people(real_cache, args.val_people, args.seed)
    real_fit = real_cache.faces.subset(fit_rows)
    real_val = real_cache.faces.subset(val_rows)
    with_real = mix([lfw_train, real_fit])
    clean_only = ~with_real.real_masked
    without_real = with_real.subset(np.flatnonzero(clean_only))
    counts |= {"rmfrd_train_people": int(len(np.unique(real_fit.labels))), "rmfrd_train_masked": int(real_fit.real_masked.sum()),
               "rmfrd_train_unmasked": int((~real_fit.real_masked).sum()), "rmfrd_val_people": args.val_people,
               "rmfrd_val_masked": int(real_val.real_masked.sum()), "rmfrd_val_unmasked": int((~real_val.real_masked).sum())}
    log.info("split: %s", counts)

    teacher = create_teacher("sface")
    targets = torch.cat([part_targets(teacher, faces, out / f"teacher_{part}.safetensors", args.reuse_teacher)
                         for part, faces in (("lfw", lfw_train), ("rmfrd-train", real_fit))])

    results: dict[str, Any] = {"split": counts, "versions": versions(), "seed": args.seed, "systems": {}}
    results_path = out / "results.json"
    if results_path.exists():
        results["systems"] = json.loads(results_path.read_text())["systems"]

    models = {}

    def train(name: str, faces: FaceSet, system_targets, overrides: list[str]) -> tuple[Path, float]:
        """Train (or finish training) one system: ``--config``, then ``--set``, then its own overrides."""
        run = out / folder_name(name)
        seed_teacher_cache(run, faces, system_targets)
        return train_system(str(args.config), run, faces, args.step_scale, (*args.set, *overrides))

    def train_and_validate(name: str, faces: FaceSet, system_targets, overrides: list[str]) -> None:
        checkpoint, seconds = train(name, faces, system_targets, overrides)
        model, _, _ = load_model(checkpoint)
        models[name] = model
        entry = results["systems"].setdefault(name, {})
        entry |= {"checkpoint": str(checkpoint), "train_minutes": seconds / 60, "overrides": overrides}
        if "val_real" not in entry:
            entry["val_real"] = identification_scores(*masked_gallery(model, real_val))
            entry["val_lfw_mu"] = run_verification(model, val, MASK_SEED, ALL_KINDS).verification["M-U"].accuracy_mean * 100
        if "val_mask_head" not in entry:  # does the mask classifier (which picks the threshold) find real masks?
            entry["val_mask_head"] = rates(mask_classes(model, np.asarray(real_val.images)), real_val.real_masked)
        log.info("%s: validation %s, LFW val M-U %.2f, mask head %s", name, entry["val_real"], entry["val_lfw_mu"],
                 entry["val_mask_head"])
        atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")

    variants = dict(parse_variant(text) for text in args.variants)
    for variant, overrides in variants.items():
        overrides = with_cutouts(overrides, lambda: cutout_file(out / "cutouts_fit.safetensors", real_fit))
        train_and_validate(f"with real masks, {variant}", with_real, targets, overrides)
    pulled = [f"with real masks, {v}" for v in variants]
    # verify and identify pick their threshold by the mask classifier's verdict, so a model whose
    # classifier misses most real masks is not a candidate while another finds them
    usable = [n for n in pulled if results["systems"][n]["val_mask_head"]["masked found %"] >= MIN_MASKS_FOUND] or pulled
    chosen = max(usable, key=lambda n: (results["systems"][n]["val_real"]["rank1"], -pulled.index(n)))
    # the same model without the real masked photos: the chosen variant's settings (the pull acts
    # on real masked photos only, so it is left out), four mask classes
    variant = chosen.removeprefix("with real masks, ")
    shared = counterpart_overrides(variants[variant])
    baseline = "without real masks" + (f" ({variant})" if shared else "")
    if not args.refit_all_people:  # otherwise the counterpart is trained on all people below
        train_and_validate(baseline, without_real, targets[clean_only], [*shared, "model.num_mask_types=4"])
    results["chosen_on_validation"] = chosen
    print("\nvalidation (rmfrd-train validation people, real masks; LFW validation identities):")
    systems = results["systems"]
    print(markdown_table([{"name": n, **systems[n]["val_real"], "lfw": systems[n]["val_lfw_mu"], **systems[n]["val_mask_head"]}
                          for n in systems if "val_mask_head" in systems[n]], [
        ("name", "system", "{}"), ("rank1", "val real-mask rank-1 %", "{:.1f}"), ("rank5", "rank-5 %", "{:.1f}"),
        ("tar_far_1e-2", "TAR@FAR=1e-2 %", "{:.1f}"), ("probes", "probes", "{}"), ("lfw", "LFW val M-U %", "{:.2f}"),
        ("masked found %", "real masks called masked %", "{:.1f}"),
        ("bare called masked %", "unmasked called masked %", "{:.1f}"),
    ]))
    print(f"chosen on validation: {chosen}; its counterpart: {baseline}", flush=True)
    atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    if args.skip_test:
        return

    tested = [baseline, chosen]
    if args.refit_all_people:
        # the choice is made; the final pair learns from all the training data there is
        real_all = real_cache.faces
        all_targets = torch.cat([targets[:len(lfw_train)],
                                 part_targets(teacher, real_all, out / "teacher_rmfrd-train-all.safetensors", [])])
        with_all = mix([lfw_train, real_all])
        clean_all = ~with_all.real_masked
        final = [(f"{baseline}, all people", with_all.subset(np.flatnonzero(clean_all)), all_targets[clean_all],
                  [*shared, "model.num_mask_types=4"]),
                 (f"{chosen}, all people", with_all, all_targets,
                  with_cutouts(variants[variant], lambda: cutout_file(out / "cutouts_all.safetensors", real_all)))]
        tested = [name for name, *_ in final]
        for name, faces, system_targets, overrides in final:
            checkpoint, seconds = train(name, faces, system_targets, overrides)
            models[name], cfg, _ = load_model(checkpoint)
            results["systems"].setdefault(name, {}).update(
                checkpoint=str(checkpoint), train_minutes=seconds / 60, overrides=overrides, people="all rmfrd-train",
                train_seed=cfg.train.seed)
        atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")

    raw = MEER("sface", input_size=112, embedding_dim=128, decouple=False, generator=False, pretrained="sface").eval()
    rmfrd = FaceCache.open(args.rmfrd_cache)
    for name, model in [*((n, models[n]) for n in tested), ("SFace (no training)", raw)]:
        entry = results["systems"].setdefault(name, {})
        if "test" not in entry:
            log.info("=== test: %s", name)
            entry["test"] = {"rmfrd_dev": rmfrd_dev(model, rmfrd, Path(args.rmfrd_root)),
                             **lfw_scores(model, val, test)}
        for path in args.also_rmfrd_cache:
            key = f"rmfrd_dev {Path(path).name}"
            if key not in entry["test"]:
                entry["test"][key] = rmfrd_dev(model, FaceCache.open(path), Path(args.rmfrd_root))
        atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    print_test_tables(results)
    if not args.extra_seeds:
        return
    caches = {"rmfrd_dev": rmfrd, **{f"rmfrd_dev {Path(p).name}": FaceCache.open(p) for p in args.also_rmfrd_cache}}
    for seed in args.extra_seeds:
        for name, faces, system_targets, overrides in final:
            seeded = f"{name}, seed {seed}"
            checkpoint, seconds = train(seeded, faces, system_targets, [*overrides, f"train.seed={seed}"])
            entry = results["systems"].setdefault(seeded, {})
            entry |= {"checkpoint": str(checkpoint), "train_minutes": seconds / 60, "train_seed": seed}
            if "seed_test" not in entry:  # rmfrd-dev only: LFW would cost ~7 min a model
                model = load_model(checkpoint)[0]
                entry["seed_test"] = {key: rmfrd_dev(model, cache, Path(args.rmfrd_root)) for key, cache in caches.items()}
            atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    print_seed_table(results, tested, args.extra_seeds)


def with_cutouts(overrides: list[str], path) -> list[str]:
    """``{cutouts}`` in a variant's overrides (``data.real_masks={cutouts}``) names the masks cut
    out of the real masked photos that system trains on: ``path()`` writes them on first use."""
    if not any("{cutouts}" in o for o in overrides):
        return overrides
    file = str(path().resolve())
    return [o.replace("{cutouts}", file) for o in overrides]


def cutout_file(path: Path, faces: FaceSet) -> Path:
    """The masks of ``faces``' real masked photos, cut along the shipped model's predicted
    occlusion (a model trained on LFW with meer's masks; it saw no photo of rmfrd)."""
    if not path.exists():
        from meer.api.model import default_model
        from meer.data.cutouts import cut_out

        cutouts = cut_out(load_model(default_model())[0], np.asarray(faces.images)[faces.real_masked])
        cutouts.save(path)
        log.info("%s: %d masks cut out of %d real masked photos", path, len(cutouts), int(faces.real_masked.sum()))
    return path


def counterpart_overrides(overrides: list[str]) -> list[str]:
    """A variant's settings without those that act on real masked photos (the pull, the pasted
    real masks): what its counterpart without real masks is trained with."""
    return [o for o in overrides if not o.startswith(("teacher.pull", "data.real_mask"))]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name:key=value;key=value"`` -> (name, overrides)."""
    name, sep, overrides = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variants: {text!r} must look like name:section.key=value;section.key=value")
    return name, [o.strip() for o in overrides.split(";") if o.strip()]


def print_seed_table(results: dict[str, Any], pair: list[str], seeds: list[int]) -> None:
    """rmfrd-dev of the final pair (without, with real masks) at each training seed, and the difference."""
    systems = results["systems"]
    for key in systems[pair[0]]["test"]:
        if not key.startswith("rmfrd_dev"):
            continue
        rows = []
        for seed in [None, *seeds]:  # None: the pair tested in full above, at the config's seed
            without, with_real = ((systems[n]["test"][key] if seed is None else systems[f"{n}, seed {seed}"]["seed_test"][key])
                                  for n in pair)
            rows.append({"seed": systems[pair[0]].get("train_seed", "config's") if seed is None else seed,
                         **{f"{m}_{side}": figures[m] for side, figures in (("without", without), ("with", with_real))
                            for m in ("rank1", "rank5", "tar_far_1e-2")}})
        for row in rows:
            row |= {f"{m}_gain": row[f"{m}_with"] - row[f"{m}_without"] for m in ("rank1", "rank5", "tar_far_1e-2")}
        rows.append({"seed": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}})
        print(f"\n{key.replace('rmfrd_dev', 'rmfrd-dev,')} over training seeds (without / with real masks / difference):")
        print(markdown_table(rows, [("seed", "train.seed", "{}")] + [
            c for m, title in (("rank1", "rank-1"), ("rank5", "rank-5"), ("tar_far_1e-2", "TAR"))
            for c in ((f"{m}_without", f"{title} without", "{:.1f}"), (f"{m}_with", f"{title} with", "{:.1f}"),
                      (f"{m}_gain", f"{title} difference", "{:+.1f}"))]))


def print_test_tables(results: dict[str, Any]) -> None:
    rows = []
    for name, entry in results["systems"].items():
        if "test" not in entry:
            continue
        t = entry["test"]
        row = {"name": name, **{f"dev_{k}": v for k, v in t["rmfrd_dev"].items()}}
        for protocol in ("lfw_all_kinds", "lfw_held_out"):
            for s in SETTINGS:
                row[f"{protocol}_{s}"] = t[protocol]["kfold"][s]
                row[f"{protocol}_{s}_stored"] = t[protocol]["stored"][s]
        rows.append(row)
    caches = sorted({k for entry in results["systems"].values() for k in entry.get("test", {}) if k.startswith("rmfrd_dev ")})
    for key in caches:  # the same photos prepared another way (--also-rmfrd-cache)
        print(f"\nrmfrd-dev, cache {key.removeprefix('rmfrd_dev ')} (real masks, test):")
        print(markdown_table([{"name": n, **e["test"][key]} for n, e in results["systems"].items() if key in e.get("test", {})], [
            ("name", "system", "{}"), ("rank1", "rank-1 %", "{:.1f}"), ("rank5", "rank-5 %", "{:.1f}"),
            ("tar_far_1e-2", "TAR@FAR=1e-2 %", "{:.1f}"), ("unmasked_loo_rank1", "unmasked LOO rank-1 %", "{:.1f}"),
            ("probes", "probes", "{}"),
        ]))
    print("\nrmfrd-dev (real masks, test):")
    print(markdown_table(rows, [
        ("name", "system", "{}"), ("dev_rank1", "rank-1 %", "{:.1f}"), ("dev_rank5", "rank-5 %", "{:.1f}"),
        ("dev_tar_far_1e-2", "TAR@FAR=1e-2 %", "{:.1f}"), ("dev_unmasked_loo_rank1", "unmasked LOO rank-1 %", "{:.1f}"),
        ("dev_probes", "probes", "{}"),
    ]))
    for protocol, title in (("lfw_all_kinds", "LFW folds 6-10, meer's masks (surgical, N95, cloth)"),
                            ("lfw_held_out", "LFW folds 6-10, cloth masks only (held out of training)")):
        print(f"\n{title}: k-fold accuracy % / accuracy at the per-setting thresholds stored from validation %")
        print(markdown_table(rows, [("name", "system", "{}")] + [
            c for s in SETTINGS for c in ((f"{protocol}_{s}", f"{s} k-fold", "{:.2f}"),
                                          (f"{protocol}_{s}_stored", f"{s} stored thr.", "{:.2f}"))
        ]))


if __name__ == "__main__":
    main()
