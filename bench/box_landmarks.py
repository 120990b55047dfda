"""Measure where the detector puts the 5 landmarks inside its own face box.

    python bench/box_landmarks.py --lfw ../shared/data/lfw --images 1000 \
           --tight ../shared/data/rmfrd-dev

For LFW photos of people in no View-2 test-fold pair, the main face's landmarks are taken
as shares of its box's width and height and averaged: ``meer.data.align.LANDMARKS_IN_BOX``,
which the ``no_face="frame"`` fallback of ``meer prepare`` places in the frame of a tight face
crop where no face is found. ``--tight`` names a folder of tight face crops to compare
with: where faces are found there, the median landmarks as shares of the whole frame and
the median box (no identity labels are read). Needs ``meer[detect]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lfw_photos import read_rgb, training_photos

from meer.data.align import LANDMARKS_IN_BOX
from meer.data.detect import create_detector, detect_faces, pick_main_face
from meer.data.formats import IMAGE_EXTENSIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default="../shared/data/lfw")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--tight", help="a folder of tight face crops to compare with")
    args = parser.parse_args()
    files = training_photos(Path(args.lfw), args.images)

    detector = create_detector("mtcnn")
    shares, aspect = [], []
    for path in files:
        face = pick_main_face(detect_faces(detector, image := read_rgb(path)), image.shape)
        if face is None:
            continue
        x1, y1, x2, y2 = face.box
        shares.append((face.landmarks5 - [x1, y1]) / [x2 - x1, y2 - y1])
        aspect.append((y2 - y1) / (x2 - x1))
    shares = np.stack(shares)
    print(f"faces used: {len(shares)} of {len(files)}; box height / width: mean {np.mean(aspect):.3f}")
    print("LANDMARKS_IN_BOX =")
    for x, y in shares.mean(0):
        print(f"    [{x:.4f}, {y:.4f}],")
    print(f"spread (std per point, share of the box): {shares.std(0).round(3).tolist()}")

    if args.tight:
        crops = sorted(p for p in Path(args.tight).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        in_frame, boxes = [], []
        for path in crops:
            face = pick_main_face(detect_faces(detector, image := read_rgb(path)), image.shape)
            if face is None:
                continue
            height, width = image.shape[:2]
            in_frame.append(face.landmarks5 / [width, height])
            boxes.append(face.box / [width, height, width, height])
        print(f"tight crops: faces found in {len(in_frame)} of {len(crops)}")
        print(f"  median landmarks as shares of the frame: {np.round(np.median(in_frame, 0), 3).tolist()}")
        print(f"  median box in the frame (x1, y1, x2, y2): {np.round(np.median(boxes, 0), 3).tolist()}")
        gap = np.abs(np.median(in_frame, 0) - LANDMARKS_IN_BOX).max()
        print(f"  largest gap to LANDMARKS_IN_BOX: {gap:.3f} of the frame")


if __name__ == "__main__":
    main()
