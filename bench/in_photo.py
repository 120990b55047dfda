"""The restoration put back into the photo: how much of the mask is left, with and without the
repair beyond the crop (``UnmaskResult.in_photo(beyond_crop=...)``).

    python bench/in_photo.py --lfw ../shared/data/lfw --photos 300 [-m src/meer/default_model]

LFW photos of people in no test-fold pair, evenly spread (``lfw_photos.training_photos``): these
figures set the repair's constants. MTCNN's landmarks on the clean photo place one of meer's masks
(all three kinds, drawn per photo from a fixed seed) on the whole photo, so its true extent is known
outside the aligned crop too (ear loops, the strip under the chin). The model then unmasks the
masked photo as a user's would be (its own detection and alignment), and per photo:

- *mask left*: the share of the true mask's pixels the output leaves as they were (no channel moved
  by more than 4 levels);
- *error beyond the region*: the mean absolute error (0-255) to the clean photo on the true mask's
  pixels that the crop's repainted region does not reach, where the repair works;
- *changed outside the mask*: pixels the repair changed (by more than 4 levels) further than 2 px
  from the true mask, as a share of the mask's area: the repair taking what is not mask.

Photos where no face is found or the model calls the face unmasked are counted and left out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from lfw_photos import read_rgb, training_photos

SEED = 15
MOVED = 4  # a pixel whose channels all stay within this many levels is left as it was


def moved(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.abs(a.astype(int) - b.astype(int)) > MOVED).any(axis=2)


def error(image: np.ndarray, clean: np.ndarray, where: np.ndarray) -> float:
    """Mean absolute error to the clean photo on ``where`` (NaN where it is empty)."""
    return float(np.abs(image.astype(int) - clean.astype(int))[where].mean()) if where.any() else np.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", required=True, help="the LFW folder (photos per person and pairs.txt)")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("-m", "--model", default=None, help="checkpoint, run or release folder (default: shipped)")
    parser.add_argument("--out", help="also write the 6 photos where the repair changed most outside the mask here: "
                                      "masked / crop only / repaired / those changes in magenta")
    args = parser.parse_args()
    root = Path(args.lfw)
    if not (root / "pairs.txt").is_file():
        parser.error(f"--lfw {root}: no pairs.txt there")

    import torch

    import meer
    from meer.data.detect import create_detector, pick_main_face
    from meer.data.masks import MaskRenderer
    from meer.data.photos import NoFaceError

    torch.set_num_threads(2)
    model = meer.load(args.model)
    detector = create_detector("mtcnn")
    renderer = MaskRenderer()
    rng = np.random.default_rng(SEED)
    rows, skipped, seconds, examples = [], {"no face": 0, "no mask seen": 0}, [], []
    for path in training_photos(root, args.photos):
        clean = read_rgb(path)
        face = pick_main_face(detector.detect(clean), clean.shape)
        if face is None:
            skipped["no face"] += 1
            continue
        render = renderer(clean, face.landmarks5, rng)
        masked, true = render.masked, render.occlusion.astype(bool)
        try:
            result = model.unmask(masked)
        except NoFaceError:
            skipped["no face"] += 1
            continue
        if not result.mask_detected:
            skipped["no mask seen"] += 1
            continue
        before = result.in_photo(masked, beyond_crop=False)
        started = time.perf_counter()
        after = result.in_photo(masked)
        seconds.append(time.perf_counter() - started)
        to_photo = cv2.invertAffineTransform(result.face.matrix)
        reached = cv2.warpAffine(result.region, to_photo, clean.shape[1::-1]) > 0.5
        beyond = true & ~reached
        near = cv2.dilate(true.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)

        rows.append({
            "left_before": (true & ~moved(before, masked)).sum() / true.sum(),
            "left_after": (true & ~moved(after, masked)).sum() / true.sum(),
            "beyond": beyond.sum() / true.sum(),
            "error_masked": error(masked, clean, beyond), "error_before": error(before, clean, beyond),
            "error_after": error(after, clean, beyond),
            "outside": (moved(after, before) & ~near).sum() / true.sum(),
        })
        if args.out:
            shown = after.copy()
            shown[moved(after, before) & ~near] = (255, 0, 255)
            examples.append((rows[-1]["outside"], np.concatenate([cv2.resize(a, (250, 250)) for a in (masked, before, after, shown)], 1)))
    if not rows:
        raise SystemExit("no photo with a face and a detected mask")
    table = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    print(f"{len(rows)} photos scored ({skipped['no face']} without a face, {skipped['no mask seen']} "
          f"called unmasked); the repair took {1000 * np.mean(seconds):.0f} ms a photo on average")
    print(f"true mask beyond the repainted region: {100 * table['beyond'].mean():.1f}% of the mask's pixels")
    print("| | mask left % | error beyond the region (0-255) | changed outside the mask, % of its area |")
    print("|---|---:|---:|---:|")
    print(f"| masked photo | 100.0 | {np.nanmean(table['error_masked']):.1f} | |")
    print(f"| crop only (beyond_crop=False) | {100 * table['left_before'].mean():.1f} | "
          f"{np.nanmean(table['error_before']):.1f} | 0.00 |")
    print(f"| with the repair beyond the crop | {100 * table['left_after'].mean():.1f} | "
          f"{np.nanmean(table['error_after']):.1f} | {100 * table['outside'].mean():.2f} |")
    worst = np.sort(table["outside"])[-5:][::-1]
    print("largest 'changed outside' shares: " + ", ".join(f"{100 * w:.1f}%" for w in worst))
    if examples:
        from PIL import Image

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        examples = [e for _, e in sorted(examples, key=lambda e: -e[0])[:6]]
        Image.fromarray(np.concatenate(examples, 0)).save(args.out)
        print(f"examples written to {args.out}")


if __name__ == "__main__":
    main()
