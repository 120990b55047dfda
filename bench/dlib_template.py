"""Measure where dlib's face chip puts meer's 5 landmarks: the ``dlib`` alignment template.

    python bench/dlib_template.py --lfw ../shared/data/lfw --images 300

For LFW photos of people in no View-2 test-fold pair: our detector gives the 5 landmarks,
dlib's own detector + 5-point shape predictor give its face chip (150 px, padding 0.25);
the landmarks are mapped into the chip with dlib's chip transform (``get_mapping_to_chip``,
rewritten here and checked against ``dlib.get_face_chip`` pixel for pixel) and averaged.
Prints the template (for ``meer.data.faceset.DLIB_TEMPLATE_150``), the spread, how far it is
from a similarity of the ArcFace template, and dlib's detection box in chip coordinates.
Needs ``meer[peers,detect]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from lfw_photos import read_rgb, training_photos
from peers.dlib import DlibPipeline

from meer.data.align import estimate_similarity, transform_points
from meer.data.detect import create_detector, detect_faces, pick_main_face
from meer.data.faceset import ARCFACE_TEMPLATE_112


def mapping_to_chip(details) -> np.ndarray:
    """dlib's ``get_mapping_to_chip``: the affine map [2, 3] from image to chip coordinates."""
    rect, angle = details.rect, details.angle
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.right(), rect.bottom()]])
    source = (corners - centre) @ rotation.T + centre
    target = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float64)
    return cv2.getAffineTransform(source.astype(np.float32), target.astype(np.float32)).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default="../shared/data/lfw")
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    files = training_photos(Path(args.lfw), args.images)

    import dlib

    peer, detector = DlibPipeline(), create_detector("mtcnn")
    points, boxes, pixel_error = [], [], []
    for path in files:
        image = read_rgb(path)
        face, box = pick_main_face(detect_faces(detector, image), image.shape), peer.main_box(image)
        if face is None or box is None:
            continue
        details = dlib.get_face_chip_details(peer.shape(image, box), size=150, padding=0.25)
        matrix = mapping_to_chip(details)
        points.append(transform_points(face.landmarks5, matrix))
        corners = np.array([[box[0], box[1]], [box[2], box[3]]], np.float64)
        boxes.append(transform_points(corners, matrix).ravel())
        if len(pixel_error) < 20:
            chip = np.asarray(dlib.extract_image_chip(image, details), np.float32)
            ours = cv2.warpAffine(image, matrix, (150, 150), flags=cv2.INTER_LINEAR).astype(np.float32)
            pixel_error.append(np.abs(chip - ours)[5:-5, 5:-5].mean())
    points = np.stack(points)
    template = points.mean(0)
    similarity = estimate_similarity(ARCFACE_TEMPLATE_112, template)
    residual = np.abs(transform_points(ARCFACE_TEMPLATE_112, similarity) - template).max()
    print(f"faces used: {len(points)} of {len(files)}")
    print(f"chip transform check: mean |dlib chip - our warp| = {np.mean(pixel_error):.2f} grey levels (interior)")
    print("DLIB_TEMPLATE_150 =")
    for x, y in template:
        print(f"    [{x:.4f}, {y:.4f}],")
    print(f"spread (std per point, px): {np.round(points.std(0).mean(1), 2).tolist()}")
    print(f"max distance from the best similarity of the ArcFace template: {residual:.3f} px")
    print(f"dlib detection box in the chip (left, top, right, bottom): {np.round(np.mean(boxes, 0), 1).tolist()}")


if __name__ == "__main__":
    main()
