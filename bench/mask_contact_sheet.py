"""Contact sheets of rendered masks (and of the synthetic faces), for looking at, not measuring.

    python bench/mask_contact_sheet.py docs/images/masks_synthetic.png --source synthetic
    python bench/mask_contact_sheet.py docs/images/masks.png --source lfw
    python bench/mask_contact_sheet.py docs/images/synthetic_faces.png --source synthetic --no-masks

``--source lfw`` reads deep-funneled LFW photos (``<data>/lfw/<Name>/<Name>_NNNN.jpg``). They
are detected and aligned with ``meer.data.detect`` / ``meer.data.align`` when a detector is
installed; otherwise (or when no face is found) a fixed central box is cropped and the
template landmarks are assumed, which is close because deep funnelling already roughly
centres and scales the faces.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from meer.data.faceset import arcface_template
from meer.data.masks import MaskRenderer
from meer.data.synthetic import SyntheticFaces
from meer.io import atomic_write_bytes

log = logging.getLogger("mask_contact_sheet")

# Where the ArcFace template's 112x112 box sits in a 250x250 deep-funneled LFW image,
# measured as the median similarity alignment of 200 MTCNN detections (x0, y0, side).
LFW_BOX = (58, 51, 132)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_faces(size: int, grid: int, seed: int, by_identity: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``grid * grid`` faces: one row per identity (``by_identity``) or all different people."""
    if by_identity:
        faces = SyntheticFaces(grid, grid, size, seed)
        return [faces.render(i, j) for i in range(grid) for j in range(grid)]
    faces = SyntheticFaces(grid * grid, 1, size, seed)
    return [faces.render(i, 0) for i in range(grid * grid)]


def lfw_faces(root: Path, size: int, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """``count`` aligned LFW faces of different people: (image, landmarks5, dense or None)."""
    people = sorted(p for p in (root / "lfw").iterdir() if p.is_dir())
    if not people:
        raise FileNotFoundError(f"no LFW people under {root / 'lfw'}")
    chosen = np.random.default_rng(seed).choice(len(people), size=count, replace=False)
    align = _aligner(size)
    faces = []
    for index in sorted(chosen):
        path = sorted(people[index].glob("*.jpg"))[0]
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        faces.append(align(image))
    return faces


def _aligner(size: int):
    """Detect + align when a detector is installed, else the fixed-box crop."""

    def crop(image: np.ndarray):
        x0, y0, side = LFW_BOX
        face = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
        return face, arcface_template(size), None

    try:
        from meer.data.align import align_face, transform_points
        from meer.data.detect import create_detector, detect_with_padding, pick_main_face

        detector = create_detector("auto")
    except (ImportError, ValueError) as err:
        log.warning("no detector/aligner (%s): using the fixed central box", err)
        return crop
    log.info("aligning with the %s detector", detector.name)

    def align(image: np.ndarray):
        face = pick_main_face(detect_with_padding(detector, image), image.shape)
        if face is None:
            return crop(image)
        aligned, matrix, landmarks = align_face(image, face.landmarks5, size)
        dense = None if face.dense is None else transform_points(face.dense, matrix)
        return aligned, landmarks, dense

    return align


def sheet(tiles: list[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Tiles uint8 [h, w, 3] -> one uint8 image with a white gap between them."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = tile
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--source", choices=("synthetic", "lfw"), default="synthetic")
    parser.add_argument("--no-masks", action="store_true", help="the faces only (8 identities x 8 samples)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding lfw/")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    count = args.grid * args.grid
    if args.source == "lfw":
        faces = lfw_faces(args.data, args.size, count, args.seed)
    else:
        faces = [(image, points, None) for image, points in
                 synthetic_faces(args.size, args.grid, args.seed, by_identity=args.no_masks)]
    if args.no_masks:
        tiles = [image for image, _, _ in faces]
    else:
        renderer = MaskRenderer()
        tiles = [renderer(image, points, np.random.default_rng([args.seed, k]), dense).masked
                 for k, (image, points, dense) in enumerate(faces)]
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet(tiles, args.grid), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(args.out, png.tobytes())
    print(f"wrote {args.out} ({count} faces, {args.source}{'' if args.no_masks else ', masked'})")


if __name__ == "__main__":
    sys.exit(main())
