"""Which detector finds the face behind the mask (issue 14): recall and landmark error.

    python bench/detector_masks.py --lfw ../shared/data/lfw --rmfrd ../shared/data/rmfrd-train \\
        --lfw-photos 200 --rmfrd-masked 241 --rmfrd-unmasked 200

Training data only (these figures choose a default). Two measurements, for each detector
installed (MTCNN, YuNet, MediaPipe), each run as meer runs it (``detect_faces``: a padded retry
when nothing is found; the main face when several are):

1. LFW photos of people in no test-fold pair, evenly spread (``lfw_photos.training_photos``).
   The reference is MTCNN's 5 landmarks on the clean photo (photos where it finds no face are
   left out and counted); meer's synthetic mask (``MaskRenderer``, all three kinds) is drawn on
   the photo at those landmarks, and every detector runs on the clean and on the masked photo.
   Found: a detection whose landmarks lie within half an inter-ocular distance of the
   reference on average (the same face). Landmark error (NME): the mean distance of the 5 points
   (or of the 2 mouth corners) to the reference, over the reference's inter-ocular distance, on
   the faces found; "NME > 0.1" counts a face found but misplaced. A detector's error on the
   clean photo is the offset of its own landmark definition from MTCNN's (0 for MTCNN itself);
   "NME masked vs own clean" measures how far the mask moves each detector's own landmarks.
2. rmfrd-train: real masks, tight 160 px crops, no reference landmarks: recall only, on all
   masked photos and on unmasked ones of the same people.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import time
from pathlib import Path

import numpy as np
from lfw_photos import read_rgb, spread, training_photos

from meer.data.detect import (
    BACKENDS,
    Detection,
    available_detectors,
    create_detector,
    detect_faces,
    pick_main_face,
)
from meer.data.masks import MaskRenderer
from meer.eval.report import markdown_table

SEED = 14
SAME_FACE = 0.5  # a detection this near the reference (NME) is the same face
MISPLACED = 0.1  # NME above which a found face counts as misplaced
MOUTH = slice(3, 5)  # the mouth corners among the 5 landmarks


def nme(found: Detection, reference: np.ndarray, points: slice = slice(None)) -> float:
    """Mean distance of ``found``'s landmarks to ``reference`` [5, 2] over its inter-ocular distance."""
    iod = float(np.linalg.norm(reference[1] - reference[0]))
    return float(np.linalg.norm(found.landmarks5[points] - reference[points], axis=1).mean() / iod)


def nearest(found: list[Detection], reference: np.ndarray) -> Detection | None:
    """The detection of the reference face, if any (the one nearest it, within ``SAME_FACE``)."""
    best = min(found, key=lambda d: nme(d, reference), default=None)
    return best if best is not None and nme(best, reference) <= SAME_FACE else None


def lfw_study(root: Path, count: int, detectors: dict) -> tuple[list[dict], dict]:
    renderer = MaskRenderer()
    reference_detector = detectors.get("mtcnn") or create_detector("mtcnn")
    records = {name: {kind: [] for kind in ("clean", "masked")} for name in detectors}
    no_reference = 0
    photos = training_photos(root, count)
    for i, path in enumerate(photos):
        image = read_rgb(path)
        found = detect_faces(reference_detector, image)
        if not found:
            no_reference += 1
            continue
        reference = pick_main_face(found, image.shape).landmarks5
        masked = renderer(image, reference, np.random.default_rng([SEED, i])).masked
        for name, detector in detectors.items():
            clean = nearest(detect_faces(detector, image), reference)
            face = nearest(detect_faces(detector, masked), reference)
            records[name]["clean"].append(None if clean is None else (nme(clean, reference), nme(clean, reference, MOUTH)))
            records[name]["masked"].append(None if face is None else (
                nme(face, reference), nme(face, reference, MOUTH),
                None if clean is None else nme(face, clean.landmarks5)))
        if (i + 1) % 50 == 0:
            print(f"  lfw {i + 1}/{len(photos)}", flush=True)
    rows = []
    for name, kinds in records.items():
        row = {"detector": name, "photos": len(kinds["clean"])}
        for kind, results in kinds.items():
            hits = [r for r in results if r is not None]
            row[f"recall_{kind}"] = 100 * len(hits) / max(len(results), 1)
            row[f"nme_{kind}"] = float(np.mean([r[0] for r in hits])) if hits else None
            row[f"mouth_{kind}"] = float(np.mean([r[1] for r in hits])) if hits else None
            row[f"misplaced_{kind}"] = 100 * sum(r[0] > MISPLACED for r in hits) / max(len(hits), 1)
        shifts = [r[2] for r in kinds["masked"] if r is not None and r[2] is not None]
        row["shift"] = float(np.mean(shifts)) if shifts else None
        rows.append(row)
    return rows, {"photos": len(photos), "no_reference": no_reference}


def rmfrd_study(root: Path, masked_count: int, unmasked_count: int, detectors: dict) -> list[dict]:
    masked, unmasked = list(root.glob("*/masked_*")), list(root.glob("*/unmasked_*"))
    masked, unmasked = spread(masked, min(masked_count, len(masked))), spread(unmasked, min(unmasked_count, len(unmasked)))
    rows = []
    for name, detector in detectors.items():
        row = {"detector": name}
        for kind, files in (("masked", masked), ("unmasked", unmasked)):
            found = sum(bool(detect_faces(detector, read_rgb(p))) for p in files)
            row[f"{kind}_n"] = len(files)
            row[f"{kind}_found"] = found
            row[f"{kind}_recall"] = 100 * found / max(len(files), 1)
        rows.append(row)
        print(f"  rmfrd {name} done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default="../shared/data/lfw")
    parser.add_argument("--rmfrd", default="../shared/data/rmfrd-train")
    parser.add_argument("--lfw-photos", type=int, default=200)
    parser.add_argument("--rmfrd-masked", type=int, default=241, help="masked rmfrd-train photos to test (all: 241)")
    parser.add_argument("--rmfrd-unmasked", type=int, default=200, help="unmasked rmfrd-train photos to test")
    parser.add_argument("--detectors", nargs="*", help="default: every installed one")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    names = args.detectors or available_detectors()
    missing = sorted(set(BACKENDS) - set(names))
    detectors = {name: create_detector(name) for name in names}
    print(f"detectors: {', '.join(names)}" + (f" (not measured: {', '.join(missing)})" if missing else ""), flush=True)
    tick = time.perf_counter()
    rows, counts = lfw_study(Path(args.lfw), args.lfw_photos, detectors)
    print(f"\nLFW training photos with meer's masks: {counts['photos']} photos, "
          f"{counts['no_reference']} without an MTCNN face on the clean photo (left out)\n")
    print(markdown_table(rows, [
        ("detector", "detector", "{}"), ("photos", "photos", "{}"),
        ("recall_clean", "recall clean %", "{:.1f}"), ("recall_masked", "recall masked %", "{:.1f}"),
        ("nme_clean", "NME clean", "{:.3f}"), ("nme_masked", "NME masked", "{:.3f}"),
        ("mouth_clean", "mouth NME clean", "{:.3f}"), ("mouth_masked", "mouth NME masked", "{:.3f}"),
        ("misplaced_masked", "masked NME > 0.1 %", "{:.1f}"),
        ("shift", "NME masked vs own clean", "{:.3f}"),
    ]), flush=True)
    rmfrd = rmfrd_study(Path(args.rmfrd), args.rmfrd_masked, args.rmfrd_unmasked, detectors)
    print("\nrmfrd-train, real masks (recall only: no reference landmarks)\n")
    print(markdown_table(rmfrd, [
        ("detector", "detector", "{}"), ("masked_found", "masked found", "{}"), ("masked_n", "of", "{}"),
        ("masked_recall", "recall masked %", "{:.1f}"), ("unmasked_found", "unmasked found", "{}"),
        ("unmasked_n", "of", "{}"), ("unmasked_recall", "recall unmasked %", "{:.1f}"),
    ]))
    print(f"\n{time.perf_counter() - tick:.0f} s")


if __name__ == "__main__":
    main()
