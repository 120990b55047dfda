"""Train the occlusion refiner: where exactly is the mask? (issue 15, item 2)

    python bench/train_occlusion.py bench/configs/pretrain/occlusion.yaml \
        --out runs/occlusion [--set steps=3000]

The decoupling module predicts the mask at stride 8, so the restored face keeps the mask rims
and ear loops its coarse map misses, and loses skin it takes for mask. The refiner
(:class:`meer.models.occlusion.OcclusionRefiner`) sharpens that map at full resolution. Every
other weight of ``base_model`` is frozen, so its recogniser and generator stay as they are; the
generator goes on reading the map it learned with (``model.generator_occlusion``), the composite
follows the refined one.

It learns on the generator pre-training's faces (``bench/pretrain_generator.py``: LFW outside
the test folds and the validation identities, rmfrd-train's unmasked photos, meer's synthetic
faces) with meer's masks of the kinds in ``mask_types`` (and, with ``real_masks``, a share of
real masks cut out of photos by ``meer cutouts``, turned, moved and recoloured with
``real_mask_augment``), some faces left bare: binary
cross-entropy and soft Dice against the rendered region. The frozen recogniser is what costs
(~35 img/s on two cores), so each face is masked ``passes`` times up front and its coarse map
computed once; training then runs on that pool, each copy mirrored on every other pass over it. Every ``eval_every`` steps it is
scored on the validation identities' faces with the benchmark's masks, trained and held-out
kinds apart: IoU of the region above the threshold with the true one, the share of the true
region it misses and of skin it adds, and the composite's PSNR / SSIM / boundary excess with
the base model's generator and blend. The best step by ``best_metric`` (default: IoU on the
trained kinds) goes to ``checkpoints/best``, a meer checkpoint, and the last ``keep_steps`` step
checkpoints stay. A run resumes from its latest checkpoint, and the pool is kept in the run
folder (``pool.npz``) so that a resumed run does not build it again.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lfw_benchmark import MASK_SEED
from pretrain_generator import (
    append_metrics,
    keep_best,
    lr_at,
    resume,
    save_step,
    start_run,
    training_faces,
)

from meer.data.cutouts import MaskCutouts
from meer.data.dataset import MaskedFaces, StepSampler, mask_renderer, to_tensor, to_uint8
from meer.data.faceset import mix
from meer.data.masks import MASK_TYPES, REAL_MASK
from meer.eval.masked_copies import MaskedCopies, render_test_masks
from meer.eval.synthesis import boundary_excess, region_psnr, region_ssim
from meer.inference.checkpoint import load_model
from meer.io import atomic_write
from meer.models.occlusion import OcclusionRefiner

log = logging.getLogger("train_occlusion")


@dataclass
class OcclusionConfig:
    base_model: str = "src/meer/default_model"  # frozen: recogniser, decoupling module, generator
    fresh_refiner: bool = True  # false: go on training base_model's own refiner
    lfw_cache: str = "data/lfw112"
    pairs: str = "../shared/data/lfw/pairs.txt"
    rmfrd_cache: str = "data/rmfrd-train112"  # its unmasked photos; "" for none
    synthetic_faces: int = 800
    mask_types: list[str] = field(default_factory=lambda: ["surgical", "n95", "cloth"])
    mask_prob: float = 0.9
    passes: int = 2  # masked copies of each face in the pool
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    init_step: int = 0  # lr_at's warm-up starts here
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    cosine_start: int = 0  # lr_at's cosine starts here
    bce: float = 1.0
    # the BCE's weight on mask pixels against face pixels: above 1, a missed mask pixel costs more than
    # a face pixel taken (mask left beside the repainted region shows its edge; skin repainted does not)
    bce_pos_weight: float = 1.0
    dice: float = 1.0
    val_faces: int = 96
    # masks cut out of real masked photos (``meer cutouts``) pasted on the validation faces as a
    # further test: real fabrics and shapes no renderer drew; "" for none
    val_cutouts: str = ""
    # masks cut out of real masked photos (``meer cutouts``) in the training pool: this share of the
    # masked faces wears one instead of a drawn mask (its region is the cut-out's, exactly); "" for none
    real_masks: str = ""
    real_mask_share: float = 0.0
    real_mask_augment: bool = False  # turn, scale, shift and recolour each pasted cut-out (MaskCutouts.augment)
    eval_every: int = 250
    # the validation figure that picks checkpoints/best (a key of metrics.jsonl); lower is better
    # for the shares missed / extra and the boundary excess, higher for the rest
    best_metric: str = "val/seen/iou"
    keep_steps: int = 2  # step checkpoints kept besides checkpoints/best
    log_every: int = 25
    seed: int = 0
    threads: int = 2

# what the pool is made of, with the frozen model's weights but NOT_IN_POOL's: a pool.npz built otherwise
# is built again
POOL_KEYS = ("base_model", "lfw_cache", "pairs", "rmfrd_cache", "synthetic_faces", "mask_types", "mask_prob",
             "passes", "real_masks", "real_mask_share", "real_mask_augment", "seed")
NOT_IN_POOL = ("occlusion_refiner.", "generator.")
LOWER_IS_BETTER = ("missed", "extra", "boundary")
VAL_KINDS = ("surgical", "n95", "cloth")  # the validation faces wear each of these


def refined_model(cfg: OcclusionConfig):
    """The base model with a fresh refiner (or its own, with ``fresh_refiner`` false); only the
    refiner trains. Returns it and its meer config."""
    model, meer_cfg, _ = load_model(cfg.base_model)
    if cfg.fresh_refiner:
        model.occlusion_refiner = OcclusionRefiner()
    elif model.occlusion_refiner is None:
        raise SystemExit(f"error: {cfg.base_model} has no occlusion refiner to go on training (set fresh_refiner=true)")
    model.eval().requires_grad_(False)
    model.occlusion_refiner.requires_grad_(True).train()
    meer_cfg = dataclasses.replace(meer_cfg, model=dataclasses.replace(meer_cfg.model, occlusion_refiner=True))
    return model, meer_cfg


@torch.no_grad()
def build_pool(model, faces, cfg: OcclusionConfig, cutouts: MaskCutouts | None = None) -> dict[str, np.ndarray]:
    """Each face masked ``passes`` times (keys ``pass * n + i`` of :class:`MaskedFaces`; a
    ``real_mask_share`` of the masks pasted from ``cutouts``), with the frozen model's coarse
    occlusion logits: uint8 masked faces and regions, float16 logits."""
    dataset = MaskedFaces(faces, mask_renderer(cfg.mask_types), cfg.mask_prob, hflip=True, seed=cfg.seed,
                          cutouts=cutouts, cutout_share=cfg.real_mask_share)
    keys = range(cfg.passes * len(faces))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, keys), batch_size=64, num_workers=1)
    pool = {"masked": [], "occlusion": [], "coarse": []}
    t0 = time.time()
    for batch in loader:
        pool["masked"].append(to_uint8(batch["masked"]))
        pool["occlusion"].append(batch["occlusion"][:, 0].numpy().astype(np.uint8))
        pool["coarse"].append(model(batch["masked"]).decoupled.occlusion_logits[:, 0].half().numpy())
        if len(pool["masked"]) % 20 == 0:
            done = 64 * len(pool["masked"])
            log.info("pool: %d of %d faces, %.0f img/s", done, len(keys), done / (time.time() - t0))
    return {k: np.concatenate(v) for k, v in pool.items()}


def coarse_map_digest(model) -> str:
    """sha256 of the weights the pool's coarse maps come from: all of ``model``'s but the refiner's
    and the generator's, which the pool does not read."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith(NOT_IN_POOL):
            digest.update(name.encode())
            digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_pool(out: Path, build, cfg: OcclusionConfig, model) -> dict[str, np.ndarray]:
    """``out/pool.npz`` if it was built with ``cfg``'s pool settings and ``model``'s coarse maps, else
    ``build()`` written there (atomically) first."""
    key = json.dumps({"weights": coarse_map_digest(model), **{k: getattr(cfg, k) for k in POOL_KEYS}}, sort_keys=True)
    path = out / "pool.npz"
    if path.exists():
        with np.load(path) as stored:
            if str(stored["key"]) == key:
                log.info("pool: read from %s", path)
                return {k: stored[k] for k in stored.files if k != "key"}
        log.info("pool: %s was built with other settings; building it again", path)
    pool = build()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file, not a name: np.savez would add ".npz" to the name
            np.savez(f, key=np.array(key), **pool)

    atomic_write(path, write)
    return pool


def validation_figures(cfg: OcclusionConfig) -> list[str]:
    """The names :func:`validate` gives this run's figures."""
    groups = ["seen"] + ["held_out"] * (set(VAL_KINDS) > set(cfg.mask_types)) + ["real_cutouts"] * bool(cfg.val_cutouts)
    return [f"val/{g}/{k}" for g in groups for k in ("iou", "missed", "extra", "psnr", "ssim", "boundary")]


def better(metric: str, new: float, old: float | None) -> bool:
    """Is ``new`` a better value of validation figure ``metric`` than ``old`` (None: none yet)?"""
    if old is None:
        return True
    return new < old if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else new > old


def pool_batch(pool: dict[str, np.ndarray], keys: list[int], size: int) -> dict[str, torch.Tensor]:
    """The pool's rows ``keys`` (modulo its size), each mirrored or not by its key: masked faces,
    true regions ``[B, 1, S, S]`` and coarse logits upsampled to them."""
    rows = np.asarray(keys) % len(pool["masked"])
    masked = to_tensor(pool["masked"][rows])
    target = torch.from_numpy(pool["occlusion"][rows]).float()[:, None]
    coarse = F.interpolate(torch.from_numpy(pool["coarse"][rows]).float()[:, None], size=(size, size),
                           mode="bilinear", align_corners=False)
    flip = torch.from_numpy((np.asarray(keys) // len(pool["masked"]) + rows) % 2 == 1)
    batch = {"masked": masked, "occlusion": target, "coarse": coarse}
    return {k: torch.where(flip[:, None, None, None], v.flip(3), v) for k, v in batch.items()}


def losses(model, batch: dict[str, torch.Tensor], cfg: OcclusionConfig) -> tuple[torch.Tensor, dict[str, float]]:
    target = batch["occlusion"]
    logits = model.occlusion_refiner(batch["masked"], batch["coarse"])
    p = torch.sigmoid(logits)
    overlap = (p * target).sum((1, 2, 3))
    total = (p + target).sum((1, 2, 3))
    has_mask = target.sum((1, 2, 3)) > 0
    dice = (1 - (2 * overlap + 1) / (total + 1))[has_mask].mean() if has_mask.any() else logits.sum() * 0
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(cfg.bce_pos_weight))
    parts = {"bce": bce, "dice": dice}
    return cfg.bce * parts["bce"] + cfg.dice * parts["dice"], {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def validate(model, faces, masks, trained: list[str]) -> dict[str, float]:
    """Region overlap with the true masks, and the composite's quality, on trained / held-out kinds."""
    model.occlusion_refiner.eval()
    occlusion, restored = [], []
    for i in range(0, len(faces), 32):
        x = to_tensor(masks.images[i : i + 32])
        unmasked = model.unmask(x)
        occlusion.append(unmasked.occlusion[:, 0].numpy())
        restored.append(to_uint8(unmasked.restored))
    model.occlusion_refiner.train()
    predicted = np.concatenate(occlusion) > model.occlusion_threshold
    true = masks.occlusion >= 0.5
    restored, clean = np.concatenate(restored), np.asarray(faces.images)
    inter, union = (predicted & true).sum((1, 2)), (predicted | true).sum((1, 2))
    missed, extra = (true & ~predicted).sum((1, 2)), (predicted & ~true).sum((1, 2))
    area = true.sum((1, 2)).clip(1)
    scores = {"iou": inter / union.clip(1), "missed": missed / area, "extra": extra / area,
              "psnr": region_psnr(restored, clean, masks.occlusion), "ssim": region_ssim(restored, clean, masks.occlusion),
              "boundary": boundary_excess(restored, clean, masks.occlusion) * 255}
    seen = np.isin(masks.mask_type, [MASK_TYPES.index(k) for k in trained])
    real = masks.mask_type == REAL_MASK
    groups = (("seen", seen), ("held_out", ~seen & ~real), ("real_cutouts", real))
    return {f"val/{name}/{k}": float(np.nanmean(v[keep])) for name, keep in groups if keep.any()
            for k, v in scores.items()}


def with_cutouts(faces, masks: MaskedCopies, path: str) -> MaskedCopies:
    """``masks`` followed by the same faces wearing the real masks of ``path`` (one per face,
    drawn from a fixed seed), marked as real masks."""
    cutouts, rng = MaskCutouts.load(path), np.random.default_rng(MASK_SEED)
    pasted = [cutouts.paste(np.asarray(image), rng) for image in faces.images]
    return MaskedCopies(np.concatenate([masks.images, np.stack([m for m, _ in pasted])]),
                        np.concatenate([masks.occlusion, np.stack([o for _, o in pasted])]),
                        np.concatenate([masks.mask_type, np.full(len(pasted), REAL_MASK)]))


def main() -> None:
    cfg, out = start_run(__doc__, OcclusionConfig, "occlusion_config.json")
    if cfg.best_metric not in validation_figures(cfg):
        raise SystemExit(f"error: best_metric {cfg.best_metric!r} is none of this run's validation figures: "
                         f"{', '.join(validation_figures(cfg))}")

    faces, val_faces, counts = training_faces(cfg)
    log.info("faces: %s", counts)
    val_masks = render_test_masks(val_faces, MASK_SEED, VAL_KINDS)
    if cfg.val_cutouts:
        val_masks = with_cutouts(val_faces, val_masks, cfg.val_cutouts)
        val_faces = mix([dataclasses.replace(val_faces, masked=None)] * 2)

    model, meer_cfg = refined_model(cfg)
    refiner = model.occlusion_refiner
    try:
        cutouts = MaskCutouts.load(cfg.real_masks, cfg.real_mask_augment) if cfg.real_masks else None
        pool = cached_pool(out, lambda: build_pool(model, faces, cfg, cutouts), cfg, model)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    log.info("pool: %d masked faces, %d bare", len(pool["masked"]), int((pool["occlusion"].max((1, 2)) == 0).sum()))
    log.info("occlusion refiner: %d weights", sum(p.numel() for p in refiner.parameters()))
    optimizer = torch.optim.Adam(refiner.parameters(), lr=cfg.lr)
    resumed = resume(out, refiner, "model.occlusion_refiner", optimizer)
    start, best = resumed or (0, {})
    if resumed is None:
        metrics = {"step": 0, **validate(model, val_faces, val_masks, cfg.mask_types)}
        append_metrics(out, metrics)  # a fresh refiner starts at zero: the coarse map alone

    sampler = iter(StepSampler(len(pool["masked"]), cfg.batch_size, seed=cfg.seed, start_step=start))
    t0, seen_images = time.time(), 0
    for step in range(start, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        total, parts = losses(model, pool_batch(pool, next(sampler), faces.images.shape[1]), cfg)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        seen_images += cfg.batch_size
        done = step + 1
        if done % cfg.log_every == 0:
            log.info("step %d loss %.4f %s lr %.2e %.1f img/s", done, float(total.detach()),
                     " ".join(f"{k} {v:.4f}" for k, v in parts.items()), lr_at(cfg, step),
                     seen_images / (time.time() - t0))
        if done % cfg.eval_every == 0 or done == cfg.steps:
            metrics = {"step": done, **validate(model, val_faces, val_masks, cfg.mask_types),
                       "train/loss": float(total.detach()), "images_per_s": seen_images / (time.time() - t0)}
            append_metrics(out, metrics)
            improved = better(cfg.best_metric, metrics[cfg.best_metric], best.get(cfg.best_metric))
            if improved:
                best = metrics
            path = save_step(out, model, meer_cfg, optimizer, done, best,
                             {"stage": "occlusion-refiner", "occlusion": dataclasses.asdict(cfg)}, cfg.keep_steps)
            if improved:
                keep_best(out, path)


if __name__ == "__main__":
    main()
