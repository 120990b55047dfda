"""Fit a checkpoint's mask classifier on frozen features, and say how well it finds masks.

    python bench/fit_mask_head.py runs/generator-pretrain-edge/released-step2000 \
        --lfw-cache data/lfw112 --rmfrd-train-cache data/rmfrd-train112 --out runs/mask-head

The mask head (a linear layer on the pooled mask part ``x_mask``) decides whether a face wears a
mask, which picks the verification threshold, marks enrolled photos and gates ``unmask``. In the
SFace-based models it barely trains (weight 0.2 at the recogniser's learning rate 1e-4 for 200
steps): its logits stay near their start and it calls every face unmasked. The head reads
nothing the rest of the network does, so refitting it on frozen features changes no embedding
and no restoration.

Fit: cross-entropy over the classes none / surgical / N95 / cloth on the LFW training split of
``lfw_benchmark.py`` (people in no View-2 test pair, minus the 120 validation identities), each
face clean and with one of meer's masks. Measured, before and after: on the validation
identities (clean vs meer's masks) and on rmfrd-train's photos, real masks the fit never saw
(training data, used only to measure). Writes ``--out/checkpoint``: the input checkpoint with the
refitted head (``meer`` loads it like any checkpoint).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lfw_benchmark import lfw_split
from safetensors.torch import save_file

from meer.data.cache import FaceCache
from meer.data.masks import MASK_TYPES
from meer.eval.masked_copies import render_test_masks
from meer.inference.batched import batches
from meer.inference.checkpoint import (
    FORMAT_VERSION,
    WEIGHTS,
    find_checkpoint,
    is_release,
    load_model,
    load_weights,
)
from meer.io import atomic_write, atomic_write_json

FIT_SEED, VAL_SEED = 21, 22  # mask draws for the fitting and validation faces


@torch.no_grad()
def mask_features(model, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Pooled ``x_mask`` ``[N, C]``, the mask head's input, of uint8 faces ``[N, S, S, 3]``."""
    device = next(model.parameters()).device
    return torch.cat([model(x).decoupled.mask.mean((2, 3)).cpu() for _, x in batches(images, batch_size, device)])


def fit_head(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 500,
             weight_decay: float = 1e-4) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, folded back into one linear layer."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=weight_decay)
    x = (features - mean) / std
    for _ in range(steps):
        loss = F.cross_entropy(head(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # head((f - mean) / std) == folded(f)
        folded = torch.nn.Linear(features.shape[1], classes)
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight * mean / std).sum(1))
    return folded


def rates(predicted: np.ndarray, masked: np.ndarray) -> dict[str, float]:
    """Share of masked faces called masked (recall) and of bare faces called masked."""
    called = predicted != 0
    return {"masked found %": 100 * float(called[masked].mean()), "bare called masked %": 100 * float(called[~masked].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--lfw-cache", required=True)
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--rmfrd-train-cache", required=True, help="flagged real masked photos (measure only)")
    parser.add_argument("--fit-faces", type=int, default=2000, help="LFW training faces, spread evenly")
    parser.add_argument("--out", default="runs/mask-head")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    source = find_checkpoint(args.checkpoint)
    if is_release(source):
        raise SystemExit(f"error: {source} is a release; give the training checkpoint it was exported from")
    model, _, _ = load_model(source)
    kinds = tuple(MASK_TYPES[1:])
    if model.decouple.mask_head.out_features != len(MASK_TYPES):
        raise SystemExit(f"error: expected a head over {MASK_TYPES}")

    train, val, _, _ = lfw_split(FaceCache.open(args.lfw_cache), Path(args.pairs), 112, 120, 0)
    fit = train.subset(np.linspace(0, len(train) - 1, args.fit_faces).round().astype(int))
    sets = {}
    for name, faces, seed in (("fit", fit, FIT_SEED), ("validation", val.faces, VAL_SEED)):
        masks = render_test_masks(faces, seed, kinds)
        images = np.concatenate([np.asarray(faces.images), masks.images])
        labels = np.concatenate([np.zeros(len(faces), np.int64), masks.mask_type])
        sets[name] = (mask_features(model, images), labels)
    real = FaceCache.open(args.rmfrd_train_cache).faces
    sets["rmfrd-train (real masks)"] = (mask_features(model, np.asarray(real.images)),
                                        real.real_masked.astype(np.int64))

    old = model.decouple.mask_head
    new = fit_head(sets["fit"][0], torch.from_numpy(sets["fit"][1]), len(MASK_TYPES))
    rows = []
    for head_name, head in (("shipped head", old), ("refitted head", new)):
        for set_name, (features, labels) in sets.items():
            with torch.no_grad():
                predicted = head(features).argmax(1).numpy()
            row = {"head": head_name, "faces": set_name, **rates(predicted, labels != 0)}
            if set_name != "rmfrd-train (real masks)":
                row["class accuracy %"] = 100 * float((predicted == labels).mean())
            rows.append(row)
            print(json.dumps(row), flush=True)

    out = Path(args.out)
    target = out / "checkpoint"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    weights = load_weights(target)
    prefix = next(k for k in weights if k.endswith("decouple.mask_head.weight"))[: -len("weight")]
    weights[prefix + "weight"] = new.weight.detach().to(weights[prefix + "weight"].dtype).contiguous()
    weights[prefix + "bias"] = new.bias.detach().to(weights[prefix + "bias"].dtype).contiguous()
    atomic_write(target / WEIGHTS, lambda tmp: save_file(weights, tmp, metadata={"format": f"meer-{FORMAT_VERSION}"}))
    atomic_write_json(out / "results.json", {"checkpoint": args.checkpoint, "rows": rows})
    print(f"wrote {target} (mask head refitted) and {out / 'results.json'}")


if __name__ == "__main__":
    main()
