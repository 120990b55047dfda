"""Pre-train the restoration generator on every face we may train on (issue 15, item 1).

    python bench/pretrain_generator.py bench/configs/pretrain/generator.yaml \
        --out runs/generator-pretrain [--set steps=20000]

Restoring a face needs no identity labels, so the generator learns from every face outside the
test data: the LFW photos of people in no pair of View-2 folds 6-10 (minus the benchmark's 120
validation identities, which measure it), rmfrd-train's unmasked photos and meer's synthetic
faces, each with one of meer's masks drawn on the fly (the kinds in ``mask_types``; leave one
out to test on it) or, with ``real_masks``, one of the real masks ``meer cutouts`` cut out of
photos (rmfrd-train's: the colours, prints and folds no drawn mask has). The recogniser
(backbone and mask decoupling module of ``base_model``) is frozen: it gives the identity part
and skips the generator reads, the predicted occlusion it repaints, and judges the result:

- ``pix``: L1 of the composite to the clean face (``pix_inside`` more inside the true mask), and
  ``pix_raw``: L1 of the raw output on the true mask grown by 4 px, so the generator paints all
  of the mask even where the predicted occlusion falls short;
- ``mse``: as ``pix`` with squared errors (the mean, which PSNR rewards, where L1 learns the median);
- ``perceptual``: L1 between the recogniser's feature maps (strides 2, 4, 8) of the composite and
  of the clean face, each over the clean map's mean magnitude;
- ``id``: cosine distance between the recogniser's embeddings of the composite and the clean face;
- ``edge``: L1 between the Sobel gradients (each colour channel, x and y) of the composite and of
  the clean face on the true mask grown by 4 px: seams and colour steps at the region's edge and
  missing structure inside it (what the benchmark's boundary measure sees);
- ``ssim``: 1 - SSIM (Gaussian window, sigma 1.5, as the benchmark scores it) of the composite to
  the clean face, averaged on the true mask grown by 4 px: the L1 + SSIM mix of Zhao et al.,
  "Loss Functions for Image Restoration with Neural Networks" (2017);
- ``boundary``: the benchmark's boundary measure made a loss: the gradient magnitude of the
  composite's luma in excess of the clean face's, ``relu(|grad restored| - |grad clean|)``, on the
  band within 3 px of the true mask's edge, x255 (grey levels). ``edge`` asks the gradients to
  match; this one only penalises gradient the clean face does not have there.

Every ``eval_every`` steps the composite is scored (region PSNR / SSIM, boundary excess) on the
validation identities' faces with the benchmark's masks, by mask kind; lines go to
``metrics.jsonl``, the best step (PSNR on the trained kinds) to ``checkpoints/best``. A run
resumes from its latest checkpoint (same data stream, optimiser state) when started again with
the same ``--out``; each checkpoint is a meer checkpoint (``meer unmask -m``, ``load_model``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse
import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from lfw_benchmark import MASK_SEED, lfw_split
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from meer.config import build, deep_merge, parse_override
from meer.data.cache import FaceCache
from meer.data.cutouts import MaskCutouts
from meer.data.dataset import MaskedFaces, StepSampler, mask_renderer, to_tensor, to_uint8
from meer.data.faceset import FaceSet, mix
from meer.data.masks import MASK_TYPES
from meer.data.synthetic import SyntheticFaces
from meer.eval.masked_copies import render_test_masks
from meer.eval.synthesis import boundary_excess, region_psnr, region_ssim
from meer.inference.checkpoint import (
    flat_state,
    latest_checkpoint,
    load_model,
    load_train_state,
    load_weights,
    save_checkpoint,
    split_state,
)
from meer.io import atomic_write_text
from meer.models.generator import create_generator
from meer.models.meer import Unmasked
from meer.train.trainer import versions

log = logging.getLogger("pretrain_generator")


@dataclass
class PretrainConfig:
    base_model: str = "src/meer/default_model"  # the frozen recogniser (and occlusion predictor)
    # A new run's generator starts from this checkpoint's or release's generator (no optimiser
    # state) as if saved at ``init_step``: the schedule and the data stream go on from there, and
    # the learning rate warms up again over ``warmup_steps``. "" for a generator from scratch.
    init_generator: str = ""
    init_step: int = 0
    # the learning rate of the weights taken from ``init_generator``, as a share of ``lr``; weights
    # it lacks (a ``gated-encoder`` grown from a ``gated`` generator: the encoder) train at ``lr``
    init_lr_scale: float = 1.0
    generator_arch: str = "gated"
    generator_width: int = 32
    # the occlusion map the generator reads (model.generator_occlusion): "refined" needs a base
    # model with an occlusion refiner (bench/train_occlusion.py)
    generator_occlusion: str = "coarse"
    blend_dilate: int = 2
    blend_feather: int = 2
    lfw_cache: str = "data/lfw112"
    pairs: str = "../shared/data/lfw/pairs.txt"
    rmfrd_cache: str = "data/rmfrd-train112"  # its unmasked photos; "" for none
    synthetic_faces: int = 800  # meer's synthetic faces (8 a person); 0 for none
    mask_types: list[str] = field(default_factory=lambda: ["surgical", "n95"])
    mask_prob: float = 0.9
    # real masks cut out of photos (``meer cutouts``; data.real_masks of a meer config): this share
    # of the masked faces wears one of them instead of a drawn mask. "" for none
    real_masks: str = ""
    real_mask_share: float = 0.0
    real_mask_augment: bool = False  # turn, scale, shift and recolour each pasted cut-out (MaskCutouts.augment)
    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decay to this share of lr at ``steps``
    # the cosine starts ``warmup_steps`` after this step: 0 for the whole run; a later step gives a run
    # at a constant rate (min_lr_ratio 1) a decaying tail when it is resumed with this and a new ``steps``
    cosine_start: int = 0
    grad_clip: float = 5.0
    pix: float = 1.0
    pix_inside: float = 4.0
    pix_raw: float = 1.0
    mse: float = 0.0
    perceptual: float = 0.0
    id: float = 0.0
    edge: float = 0.0
    ssim: float = 0.0
    boundary: float = 0.0
    val_faces: int = 96
    eval_every: int = 250
    ckpt_every: int = 250
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    device: str = "cpu"  # "cuda" trains on the GPU (the frozen recogniser too)
    workers: int = 1  # data loader processes drawing the masks
    # stop after this many minutes of training (0: none), with a last validation and checkpoint;
    # the schedule still runs to ``steps``, so give a time-limited run a constant rate (min_lr_ratio 1)
    max_minutes: float = 0.0
    # the training and validation faces in one file (JPEG at ``pack_quality``), for a machine without
    # the caches (a lent GPU): written from the caches when missing, read instead of them when there
    faces_pack: str = ""
    pack_quality: int = 90


def load_pretrain_config(path: str, overrides: list[str], cls: type = PretrainConfig):
    """A ``cls`` (a dataclass of a bench script's keys) from a YAML file and ``key=value`` overrides."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for text in overrides:
        raw = deep_merge(raw, parse_override(text))
    return build(cls, raw, "")


def start_run(description: str, cls: type, record: str):
    """The command line of a bench training script: its config (a ``cls``) and run folder, with the
    config, seed and versions written to ``record`` in it; threads and seed set."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help=f"YAML with {cls.__name__}'s keys")
    parser.add_argument("--out", required=True, help="run folder (resumed when it has checkpoints)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = load_pretrain_config(args.config, args.set, cls)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / record, json.dumps(
        {"config": dataclasses.asdict(cfg), "seed": cfg.seed, "versions": versions()}, indent=2))
    return cfg, out


def append_metrics(out: Path, metrics: dict) -> None:
    log.info("val %s", json.dumps(metrics))
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")


def training_faces(cfg: PretrainConfig):
    """LFW faces of non-test, non-validation people + rmfrd-train unmasked + synthetic; and the
    validation faces (the ``val_faces`` of them the run scores)."""
    pack = getattr(cfg, "faces_pack", "")  # train_occlusion.py's config has none
    if pack:
        if not Path(pack).is_file():
            faces, val_faces, counts = faces_from_caches(cfg)
            write_pack(pack, faces, val_faces, counts, pack_settings(cfg))
        faces, val_faces, counts = read_pack(pack, pack_settings(cfg))  # the JPEG faces, on every run alike
    else:
        faces, val_faces, counts = faces_from_caches(cfg)
    if cfg.synthetic_faces:  # made again on the spot: the same faces from the same seed
        synthetic = SyntheticFaces(cfg.synthetic_faces // 8, 8, 112, seed=0).generate()
        faces = mix([faces, dataclasses.replace(synthetic, masked=None)])
        counts["synthetic"] = len(synthetic)
    return faces, val_faces, counts


def faces_from_caches(cfg: PretrainConfig):
    train, val, _, counts = lfw_split(FaceCache.open(cfg.lfw_cache), Path(cfg.pairs), 112, 120, 0)
    sets = [train]
    if cfg.rmfrd_cache:
        rmfrd = FaceCache.open(cfg.rmfrd_cache).faces
        sets.append(rmfrd.subset(np.flatnonzero(~rmfrd.real_masked)))
        counts["rmfrd_unmasked"] = len(sets[-1])
    faces = mix([dataclasses.replace(s, masked=None) for s in sets])
    val_faces = val.faces.subset(np.linspace(0, len(val.faces) - 1, cfg.val_faces).round().astype(int))
    return faces, val_faces, counts


def pack_settings(cfg: PretrainConfig) -> dict:
    """What a faces pack was made from: a run whose config says otherwise refuses it."""
    return {key: getattr(cfg, key) for key in ("lfw_cache", "pairs", "rmfrd_cache", "val_faces", "pack_quality")}


def write_pack(path: str, faces: FaceSet, val_faces: FaceSet, counts: dict, settings: dict) -> None:
    """``faces`` and ``val_faces`` (images as JPEG, landmarks, labels) in one safetensors file."""
    tensors = {}
    for name, part in (("train", faces), ("val", val_faces)):
        jpegs = [cv2.imencode(".jpg", np.asarray(im)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, settings["pack_quality"]])[1]
                 for im in part.images]
        tensors |= {f"{name}.jpeg": np.concatenate(jpegs), f"{name}.jpeg_ends": np.cumsum([len(j) for j in jpegs]),
                    f"{name}.landmarks": part.landmarks, f"{name}.labels": part.labels}
    tmp = f"{path}.{os.getpid()}.tmp"
    save_file(tensors, tmp, metadata={"counts": json.dumps(counts), "settings": json.dumps(settings)})
    os.replace(tmp, path)
    log.info("faces packed into %s: %.1f MB", path, Path(path).stat().st_size / 1e6)


def read_pack(path: str, settings: dict) -> tuple[FaceSet, FaceSet, dict]:
    """The faces of :func:`write_pack`'s file, if it was made with ``settings``."""
    with safe_open(path, "np") as f:
        metadata = f.metadata() or {}
    made_with = json.loads(metadata.get("settings", "{}"))
    if made_with != settings:
        changed = sorted(k for k in settings if made_with.get(k) != settings[k])
        raise SystemExit(f"error: {path} was packed with other settings ({', '.join(changed)}): delete it to pack again")
    tensors = load_file(path)

    def part(name: str) -> FaceSet:
        data, ends = tensors[f"{name}.jpeg"], tensors[f"{name}.jpeg_ends"]
        images = np.stack([cv2.imdecode(data[a:b], cv2.IMREAD_COLOR)[..., ::-1] for a, b in zip(np.r_[0, ends[:-1]], ends)])
        return FaceSet(images, tensors[f"{name}.landmarks"], tensors[f"{name}.labels"])

    return part("train"), part("val"), json.loads(metadata["counts"]) | {"pack": path}


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def sobel(images: torch.Tensor) -> torch.Tensor:
    """x and y Sobel gradients ``[B, 2C, H, W]`` of each channel of ``[B, C, H, W]`` (replicated edges)."""
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].repeat(images.shape[1], 1, 1, 1).to(images)
    return F.conv2d(F.pad(images, [1, 1, 1, 1], mode="replicate"), kernels, groups=images.shape[1])


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-pixel SSIM ``[B, C, H, W]`` of ``[B, C, H, W]`` images (Wang et al. 2004: 11x11 Gaussian
    window, sigma 1.5, K1 0.01, K2 0.03; reflected edges), as skimage's ``structural_similarity``."""
    taps = torch.exp(-((torch.arange(11, dtype=x.dtype, device=x.device) - 5) ** 2) / (2 * 1.5**2))
    taps = taps / taps.sum()
    channels = x.shape[1]

    def blur(a: torch.Tensor) -> torch.Tensor:
        a = F.pad(a, [5, 5, 5, 5], mode="reflect")
        a = F.conv2d(a, taps.view(1, 1, 1, 11).repeat(channels, 1, 1, 1), groups=channels)
        return F.conv2d(a, taps.view(1, 1, 11, 1).repeat(channels, 1, 1, 1), groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))


LUMA = torch.tensor([0.299, 0.587, 0.114])


def gradient_excess(restored: torch.Tensor, clean: torch.Tensor, occlusion: torch.Tensor, width: int = 3) -> torch.Tensor:
    """``meer.eval.synthesis.boundary_excess`` of ``[B, 3, H, W]`` images in [-1, 1] on the band of
    ``width`` px either side of the edge of ``occlusion [B, 1, H, W]``, differentiable, x255."""
    inside = (occlusion >= 0.5).to(restored)
    size = 2 * width + 1
    band = F.max_pool2d(inside, size, 1, width) + F.max_pool2d(-inside, size, 1, width)  # dilated - eroded

    def magnitude(images: torch.Tensor) -> torch.Tensor:
        luma = ((images + 1) / 2 * LUMA.to(images).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return sobel(luma).square().sum(1, keepdim=True).add(1e-12).sqrt()

    return near_mean(F.relu(magnitude(restored) - magnitude(clean)), band) * 255


def near_mean(values: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, C, H, W]`` over the pixels of ``near [B, 1, H, W]`` and all C channels."""
    return (near * values).sum() / (values.shape[1] * near.sum()).clamp_min(1.0)


class Restorer:
    """The frozen recogniser with a trainable generator; the losses of one batch."""

    def __init__(self, cfg: PretrainConfig) -> None:
        model, meer_cfg, _ = load_model(cfg.base_model)
        model.generator = create_generator(cfg.generator_arch, model.backbone.channels[3],
                                           model.backbone.channels[:3], cfg.generator_width)
        model.blend_dilate, model.blend_feather = cfg.blend_dilate, cfg.blend_feather
        if cfg.generator_occlusion == "refined" and model.occlusion_refiner is None:
            raise ValueError(f"generator_occlusion: refined needs an occlusion refiner in {cfg.base_model}")
        model.generator_occlusion = cfg.generator_occlusion
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        model.generator.requires_grad_(True)
        self.meer_config = dataclasses.replace(meer_cfg, model=dataclasses.replace(
            meer_cfg.model, generator=True, generator_arch=cfg.generator_arch, generator_width=cfg.generator_width,
            blend_dilate=cfg.blend_dilate, blend_feather=cfg.blend_feather, generator_occlusion=cfg.generator_occlusion))
        self.cfg = cfg

    def restore(self, masked: torch.Tensor) -> Unmasked:
        """``MEER.unmask`` of masked faces ``[B, 3, S, S]``, the recogniser run without gradient."""
        with torch.no_grad():
            encoded = self.model(masked)
        return self.model.unmask(masked, encoded)

    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k in ("clean", "occlusion", "masked")}
        clean, occlusion = batch["clean"], batch["occlusion"]
        unmasked = self.restore(batch["masked"])
        raw, restored = unmasked.raw, unmasked.restored
        weight = 1.0 + cfg.pix_inside * occlusion
        parts = {"pix": (weight * (restored - clean).abs()).mean() / weight.mean()}
        if cfg.mse:
            parts["mse"] = (weight * (restored - clean).square()).mean() / weight.mean()
        near = F.max_pool2d(occlusion, 9, stride=1, padding=4)
        parts["pix_raw"] = near_mean((raw - clean).abs(), near)
        if cfg.edge:
            parts["edge"] = near_mean((sobel(restored) - sobel(clean)).abs(), near)
        if cfg.ssim:
            parts["ssim"] = 1.0 - near_mean(ssim_map(restored, clean), near)
        if cfg.boundary:
            parts["boundary"] = gradient_excess(restored, clean, occlusion)
        if cfg.perceptual or cfg.id:
            backbone = self.model.backbone
            with torch.no_grad():
                target = backbone.forward_features(clean)
                target_embedding = F.normalize(backbone.head(target[3]))
            maps = backbone.forward_features(restored)
            parts["perceptual"] = sum(
                (m - t).abs().mean() / t.abs().mean().clamp_min(1e-6) for m, t in zip(maps[:3], target[:3])) / 3
            parts["id"] = (1.0 - (F.normalize(backbone.head(maps[3])) * target_embedding).sum(1)).mean()
        total = sum(getattr(cfg, name) * value for name, value in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def validate(restorer: Restorer, faces, masks, trained: list[str]) -> dict[str, float]:
    """Region PSNR / SSIM and boundary excess of the composites, on trained and held-out kinds."""
    restorer.model.generator.eval()
    restored = np.concatenate([to_uint8(restorer.restore(to_tensor(masks.images[i:i + 32]).to(restorer.device)).restored)
                               for i in range(0, len(faces), 32)])
    restorer.model.generator.train()
    clean = np.asarray(faces.images)
    psnr = region_psnr(restored, clean, masks.occlusion)
    ssim = region_ssim(restored, clean, masks.occlusion)
    edge = boundary_excess(restored, clean, masks.occlusion) * 255
    seen = np.isin(masks.mask_type, [MASK_TYPES.index(k) for k in trained])
    out = {}
    for name, keep in (("seen", seen), ("held_out", ~seen)):
        if keep.any():
            out |= {f"val/{name}/psnr": float(psnr[keep].mean()), f"val/{name}/ssim": float(ssim[keep].mean()),
                    f"val/{name}/boundary": float(np.nanmean(edge[keep]))}
    return out


def lr_at(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps`` from ``init_step``; cosine from ``cosine_start +
    warmup_steps`` to ``min_lr_ratio`` at ``steps``."""
    start = cfg.cosine_start + cfg.warmup_steps
    t = min(1.0, max(0, step - start) / max(1, cfg.steps - start))
    cosine = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.lr * cosine * min(1.0, (step - cfg.init_step + 1) / cfg.warmup_steps)


def warm_start(generator: torch.nn.Module, initial: dict[str, torch.Tensor]) -> list[str]:
    """Load ``initial`` (another generator's weights) into ``generator``; every one of them must fit.
    Returns the names of the generator's tensors it did not hold (they keep their initialisation)."""
    keys = generator.load_state_dict(initial, strict=False)  # a tensor of another shape still raises
    if keys.unexpected_keys:
        raise ValueError(f"its generator is of another architecture (e.g. {keys.unexpected_keys[0]})")
    return keys.missing_keys


def make_optimizer(generator: torch.nn.Module, initial: dict[str, torch.Tensor], cfg: PretrainConfig):
    """Adam over two groups: the weights ``initial`` holds at ``init_lr_scale`` x the schedule's rate,
    the others at the full rate (``group["scale"]``; the training loop multiplies by it)."""
    named = list(generator.named_parameters())
    groups = [{"params": [p for n, p in named if (n in initial) == from_init], "scale": scale}
              for from_init, scale in ((True, cfg.init_lr_scale), (False, 1.0))]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas))


def save(out: Path, restorer: Restorer, optimizer, step: int, cfg: PretrainConfig, best: dict) -> Path:
    return save_step(out, restorer.model, restorer.meer_config, optimizer, step, best,
                     {"stage": "generator-pretrain", "pretrain": dataclasses.asdict(cfg)})


def save_step(out: Path, model, meer_config, optimizer, step: int, best: dict, extra: dict, keep: int = 2) -> Path:
    """A meer checkpoint of ``model`` at ``step`` in run folder ``out`` (the last ``keep`` kept),
    with the optimiser state, the best validation metrics so far and ``extra`` in its state."""
    state = {"config": dataclasses.asdict(meer_config), "step": step, **extra, "best": best, "versions": versions()}
    return save_checkpoint(out, f"step_{step:08d}", flat_state({"model": model}),
                           {"optimizer": optimizer.state_dict(), "step": step}, state, keep=keep)


def resume(out: Path, module: torch.nn.Module, prefix: str, optimizer) -> tuple[int, dict] | None:
    """Load the latest checkpoint of run folder ``out`` into ``module`` (its tensors under
    ``prefix``) and ``optimizer``: returns its step and best metrics, or None if there is none."""
    latest = latest_checkpoint(out)
    if latest is None:
        return None
    module.load_state_dict(split_state(load_weights(latest), prefix))
    train_state = load_train_state(latest)
    optimizer.load_state_dict(train_state["optimizer"])
    log.info("resumed from %s (step %d)", latest, int(train_state["step"]))
    return int(train_state["step"]), json.loads((latest / "state.json").read_text()).get("best", {})


def keep_best(out: Path, checkpoint: Path) -> None:
    """Copy ``checkpoint`` to ``out/checkpoints/best``, replacing the one there in one rename."""
    tmp = out / "checkpoints" / ".best"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp)
    shutil.rmtree(out / "checkpoints" / "best", ignore_errors=True)
    os.replace(tmp, out / "checkpoints" / "best")


def main() -> None:
    cfg, out = start_run(__doc__, PretrainConfig, "pretrain_config.json")

    faces, val_faces, counts = training_faces(cfg)
    log.info("faces: %s", counts)
    val_masks = render_test_masks(val_faces, MASK_SEED, ("surgical", "n95", "cloth"))

    try:
        restorer = Restorer(cfg)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    generator = restorer.model.generator
    log.info("generator %s width %d: %.2fM weights", cfg.generator_arch, cfg.generator_width,
             sum(p.numel() for p in generator.parameters()) / 1e6)
    initial = split_state(load_weights(cfg.init_generator), "model.generator") if cfg.init_generator else {}
    optimizer = make_optimizer(generator, initial, cfg)  # its groups follow `initial`, on a resumed run too
    resumed = resume(out, generator, "model.generator", optimizer)
    start, best = resumed or (0, {})
    if resumed is None and cfg.init_generator:
        try:
            new = warm_start(generator, initial)
        except ValueError as err:
            raise SystemExit(f"error: {cfg.init_generator}: {err}") from None
        start = cfg.init_step
        log.info("generator from %s, going on from step %d; %d new tensors", cfg.init_generator, start, len(new))
    generator.train()

    try:
        cutouts = MaskCutouts.load(cfg.real_masks, cfg.real_mask_augment) if cfg.real_masks else None
        dataset = MaskedFaces(faces, mask_renderer(cfg.mask_types), cfg.mask_prob, hflip=True, seed=cfg.seed,
                              cutouts=cutouts, cutout_share=cfg.real_mask_share)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    if cutouts is not None:
        log.info("real masks: %d cut-outs from %s on %.0f%% of the masked faces", len(cutouts), cfg.real_masks,
                 100 * cfg.real_mask_share)
    sampler = StepSampler(len(dataset), cfg.batch_size, seed=cfg.seed, start_step=start)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                              persistent_workers=cfg.workers > 0, pin_memory=restorer.device.type == "cuda"))
    t0, seen_images = time.time(), 0
    for step in range(start, cfg.steps):
        out_of_time = cfg.max_minutes > 0 and time.time() - t0 > 60 * cfg.max_minutes
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step) * group["scale"]
        total, parts = restorer.losses(next(loader))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(generator.parameters(), cfg.grad_clip)
        optimizer.step()
        seen_images += cfg.batch_size
        done = step + 1
        if done % cfg.log_every == 0:
            rate = seen_images / (time.time() - t0)
            log.info("step %d loss %.4f %s lr %.2e %.1f img/s", done, float(total.detach()),
                     " ".join(f"{k} {v:.4f}" for k, v in parts.items()), lr_at(cfg, step), rate)
        if out_of_time:
            log.info("stopping at step %d: max_minutes %g reached", done, cfg.max_minutes)
        if done % cfg.eval_every == 0 or done == cfg.steps or out_of_time:
            metrics = {"step": done, **validate(restorer, val_faces, val_masks, cfg.mask_types),
                       "train/loss": float(total.detach()), "images_per_s": seen_images / (time.time() - t0)}
            append_metrics(out, metrics)
            improved = metrics["val/seen/psnr"] > best.get("val/seen/psnr", -1.0)
            if improved:
                best = metrics
            path = save(out, restorer, optimizer, done, cfg, best)
            if improved:
                keep_best(out, path)
            if out_of_time:
                break
        elif done % cfg.ckpt_every == 0:
            save(out, restorer, optimizer, done, cfg, best)


if __name__ == "__main__":
    main()
