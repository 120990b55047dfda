"""Mask rendering, training-sample and synthetic-face generation speed on one CPU core.

    python bench/mask_throughput.py                 # masks/s and samples/s at 112x112, faces/s at 64x64
    python bench/mask_throughput.py --masks 2000 --samples 2000 --faces 3000

A training sample is what one DataLoader worker makes for the trainer (``MaskedFaces``: a mask
on half of the faces, as the configs' ``data.mask_prob`` says, flips, float tensors).

Masks are rendered on the fly for every training sample, so their cost adds to each step;
the synthetic faces are generated once per run (the demo's default dataset).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from meer.data.masks import MaskRenderer
from meer.data.synthetic import SyntheticFaces, default_workers


def masks_per_second(count: int = 2000, size: int = 112) -> float:
    """Masks rendered per second by the calling thread (after a warm-up of 20)."""
    faces = SyntheticFaces(32, 4, size, seed=0).generate()
    renderer = MaskRenderer()
    for k in range(20):  # warm-up: first calls pay for imports and allocations
        renderer(faces.images[k], faces.landmarks[k], np.random.default_rng(k))
    start = time.perf_counter()
    for k in range(count):
        i = k % len(faces)
        renderer(faces.images[i], faces.landmarks[i], np.random.default_rng(k))
    return count / (time.perf_counter() - start)


def samples_per_second(count: int = 2000, size: int = 112) -> float:
    """Training samples per second made by the calling thread (after a warm-up of 20), with
    the defaults of the iresnet50 config."""
    from meer.config import load_config
    from meer.data.dataset import MaskedFaces, mask_renderer

    data = load_config(["iresnet50"], []).data
    faces = SyntheticFaces(32, 4, size, seed=0).generate()
    dataset = MaskedFaces(faces, mask_renderer(data.mask_types), data.mask_prob, data.hflip, 0)
    for k in range(20):
        dataset[k]
    start = time.perf_counter()
    for k in range(count):
        dataset[k % len(dataset)]
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=2000, help="masks to render (0 to skip)")
    parser.add_argument("--mask-size", type=int, default=112)
    parser.add_argument("--samples", type=int, default=2000, help="training samples to make (0 to skip)")
    parser.add_argument("--faces", type=int, default=3000, help="synthetic faces to generate (0 to skip)")
    parser.add_argument("--face-size", type=int, default=64)
    args = parser.parse_args(argv)
    # One core, as a DataLoader worker has.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    if args.masks:
        rate = masks_per_second(args.masks, args.mask_size)
        print(f"masks: {args.masks} at {args.mask_size}x{args.mask_size} in {args.masks / rate:.2f} s = "
              f"{rate:.0f} faces/s on one core")

    if args.samples:
        rate = samples_per_second(args.samples, args.mask_size)
        print(f"training samples: {args.samples} at {args.mask_size}x{args.mask_size} in {args.samples / rate:.2f} s = "
              f"{rate:.0f} samples/s on one core")

    if args.faces:
        per_identity = 16
        identities = -(-args.faces // per_identity)
        start = time.perf_counter()
        generated = SyntheticFaces(identities, per_identity, args.face_size, seed=0).generate(workers=0)
        seconds = time.perf_counter() - start
        print(f"synthetic faces: {len(generated)} at {args.face_size}x{args.face_size} in {seconds:.2f} s = "
              f"{len(generated) / seconds:.0f} faces/s on one core")
        workers = default_workers()
        start = time.perf_counter()
        parallel = SyntheticFaces(identities, per_identity, args.face_size, seed=0).generate(workers=workers)
        seconds = time.perf_counter() - start
        same = np.array_equal(parallel.images, generated.images)
        print(f"synthetic faces: the same {len(parallel)} in {seconds:.2f} s = {len(parallel) / seconds:.0f} faces/s "
              f"in {workers} processes (generate's default; identical to one core: {same})")


if __name__ == "__main__":
    main()
