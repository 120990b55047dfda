"""One small trainer for every stage and every system (MEER, its ablations, the baselines).

A stage (see :class:`meer.config.StageConfig`) says which module groups train and which loss
groups are on; the trainer freezes the rest, builds the optimisers, and runs the loop:
forward the objective, backward (with ``no_sync`` while accumulating), clip, step the
recogniser/generator optimisers, then the discriminator. It owns precision, DDP wrapping,
logging and checkpoints; the objectives in :mod:`meer.train.objectives` own the losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import meer
from meer.config import RECOGNISER_GROUPS, Config, StageConfig, config_from_dict
from meer.data.cutouts import MaskCutouts
from meer.data.dataset import MaskedFaces, StepSampler, mask_renderer
from meer.data.faceset import FaceSet, mix
from meer.data.masks import MASK_CLASSES
from meer.inference import checkpoint as ckpt
from meer.io import atomic_write_json, atomic_write_text
from meer.losses.gan import GANLoss
from meer.models.discriminator import PatchDiscriminator
from meer.models.heads import MarginSoftmaxLoss, make_margin
from meer.models.meer import build_model
from meer.models.partial_fc import ShardedMarginSoftmaxLoss
from meer.train.distributed import DistEnv, all_reduce_mean, init_distributed
from meer.train.objectives import Nets, discriminator_objective, generator_objective

log = logging.getLogger(__name__)


def trained_groups(stage: StageConfig) -> set[str]:
    """The module groups (:meth:`Nets.modules`) a stage trains: those it names, and the
    distillation projection with the backbone."""
    return set(stage.train) | ({"projection"} if "backbone" in stage.train else set())


def versions() -> dict[str, str]:
    return {
        "meer": meer.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, read when its first handle is
        # made: a process that has already run a product on the GPU must have set it itself
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # On CUDA, PyTorch has no deterministic backward pass for bilinear upsampling or
        # adaptive pooling (the decoupling module and the generator use both): those warn
        # instead of failing, so a CUDA run repeats to rounding, a CPU run bit for bit.
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_nets(cfg: Config, num_classes: int) -> Nets:
    """Model, classifier (sharded across ranks when ``train.shard_centres``) and discriminator."""
    model = build_model(cfg.model)
    if cfg.model.init:
        ckpt.load_weights_into(model, cfg.model.init, "this config's model section (model.init)")
    margin = make_margin(cfg.margin.type, cfg.margin.scale, cfg.margin.m1, cfg.margin.m2, cfg.margin.m3)
    head = ShardedMarginSoftmaxLoss if cfg.train.shard_centres else MarginSoftmaxLoss
    discriminator = (
        PatchDiscriminator(cfg.model.discriminator_width, cfg.model.discriminator_layers) if cfg.model.generator else None
    )
    classifier = head(num_classes, cfg.model.embedding_dim, margin, seed=cfg.train.seed)
    teacher = projection = None
    if cfg.teacher.kind:
        from meer.models.backbones import create_teacher

        teacher = create_teacher(cfg.teacher.kind)
        dim = teacher.head.fc.out_features
        projection = nn.Linear(cfg.model.embedding_dim, dim, bias=False)
        if cfg.model.embedding_dim == dim:  # a student that starts as the teacher starts aligned
            nn.init.eye_(projection.weight)
    return Nets(model, classifier, discriminator, GANLoss(cfg.loss.gan_mode), teacher, projection)


def load_faces(cfg: Config) -> FaceSet:
    """The training faces the config names: ``data.sources`` mixed, or the one ``data.source``."""
    if cfg.data.sources:
        if cfg.data.source != "synthetic":
            log.info("data.sources is set, so data.source (%s) is not read", cfg.data.source)
        return mix([load_source(source.path, cfg) for source in cfg.data.sources])
    return load_source(cfg.data.source, cfg)


def load_source(source: str, cfg: Config) -> FaceSet:
    """The built-in synthetic set (``"synthetic"``) or a cache written by ``meer prepare``."""
    data = cfg.data
    if source == "synthetic":
        from meer.data.synthetic import SyntheticFaces

        faces = SyntheticFaces(
            data.synthetic_identities, data.synthetic_images_per_identity, cfg.model.input_size, data.synthetic_seed
        ).generate()
    else:
        from meer.data.cache import FaceCache

        cache = FaceCache.open(source)
        if cache.template != cfg.model.alignment:
            raise ValueError(f"{source} is aligned to the {cache.template} template but this model reads "
                             f"{cfg.model.alignment}-aligned faces (meer prepare --template {cfg.model.alignment})")
        faces = cache.faces
    if faces.size != cfg.model.input_size:
        raise ValueError(f"{source} has {faces.size}x{faces.size} faces but model.input_size is {cfg.model.input_size}")
    return faces


def sampling_probabilities(faces: FaceSet, cfg: Config) -> np.ndarray | None:
    """Per-row probability of being drawn when ``data.sources`` mixes several sources by weight
    (each source's share of the samples is its normalised weight); None for a single source."""
    if len(cfg.data.sources) < 2:
        return None
    if faces.source is None or int(faces.source.max()) >= len(cfg.data.sources):
        raise ValueError(f"data.sources names {len(cfg.data.sources)} sources but the faces do not say which "
                         "source each row comes from (build them with meer.data.faceset.mix)")
    weights = np.array([s.weight for s in cfg.data.sources], np.float64)
    counts = np.bincount(faces.source, minlength=len(weights)).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"data.sources: {cfg.data.sources[int(np.argmin(counts))].path} has no faces")
    probabilities = (weights / weights.sum() / counts)[faces.source]
    return probabilities / probabilities.sum()


def contiguous_labels(faces: FaceSet) -> FaceSet:
    """Renumber identities 0..K-1 (a subset of a dataset may skip some)."""
    _, labels = np.unique(faces.labels, return_inverse=True)
    return dataclasses.replace(faces, labels=labels.astype(np.int64))


def unmasked_means(targets: torch.Tensor, faces: FaceSet) -> torch.Tensor:
    """Teacher targets ``[N, 2, D]`` where each photo of a real mask (no clean twin) gets the mean
    of its person's unmasked photos, per orientation: what the masked face should map to.
    A person with no unmasked photo keeps the teacher's embedding of the masked photo itself."""
    real = torch.from_numpy(faces.real_masked)
    labels = torch.from_numpy(np.asarray(faces.labels))
    clean = ~real
    out = targets.clone()
    sums = torch.zeros(int(labels.max()) + 1, *targets.shape[1:])
    sums.index_add_(0, labels[clean], targets[clean].float())
    has_clean = torch.bincount(labels[clean], minlength=len(sums)) > 0
    use = real & has_clean[labels]
    out[use] = torch.nn.functional.normalize(sums[labels[use]], dim=-1).to(out.dtype)
    if (real & ~use).any():
        log.warning("%d photos of real masks belong to people with no unmasked photo: their teacher target "
                    "is their own embedding", int((real & ~use).sum()))
    return out


def class_means(embeddings: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """Unit-norm mean embedding of each class ``[K, D]`` (labels contiguous 0..K-1)."""
    index = torch.as_tensor(labels, device=embeddings.device)
    sums = torch.zeros(int(index.max()) + 1, embeddings.shape[1], device=embeddings.device)
    sums.index_add_(0, index, embeddings.float())
    return torch.nn.functional.normalize(sums, dim=1)


def lr_lambda(stage: StageConfig, warmup: int, schedule: str):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, stage.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class GeneratorStep(nn.Module):
    """The recogniser/generator objective as a module, so DDP can wrap one whole step."""

    def __init__(self, nets: Nets, cfg: Config, losses: set[str]) -> None:
        super().__init__()
        self.nets = nets
        self.model, self.classifier, self.discriminator = nets.model, nets.classifier, nets.discriminator
        self.projection = nets.projection  # registered, so DDP averages its gradients
        self.weights, self.losses = cfg.loss, losses
        self.teacher_cfg = cfg.teacher if nets.teacher is not None else None

    def forward(self, batch: dict[str, torch.Tensor]):
        return generator_objective(batch, self.nets, self.weights, self.losses, self.teacher_cfg)


class DiscriminatorStep(nn.Module):
    def __init__(self, nets: Nets) -> None:
        super().__init__()
        self.nets = nets
        self.discriminator = nets.discriminator

    def forward(self, batch: dict[str, torch.Tensor], restored: torch.Tensor):
        return discriminator_objective(batch, restored, self.nets)


@dataclass
class StageState:
    """The optimisation state of the stage being run."""

    stage: StageConfig
    optimisers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]
    g_step: nn.Module
    d_step: nn.Module | None


class Trainer:
    """Runs ``cfg.stages`` in order on ``faces`` (default: what ``cfg.data`` names)."""

    def __init__(self, cfg: Config, faces: FaceSet | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.env: DistEnv = init_distributed(cfg.train.device)
        # Every rank builds identical weights; randomness after that differs by rank.
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark and not cfg.train.deterministic
        self.faces = contiguous_labels(faces if faces is not None else load_faces(cfg))
        self.num_classes = self.faces.num_identities
        self.probabilities = sampling_probabilities(self.faces, cfg)
        real = self.faces.real_masked
        cutouts = MaskCutouts.load(cfg.data.real_masks, cfg.data.real_mask_augment) if cfg.data.real_masks else None
        real_class = (f"the training data holds {int(real.sum())} photos of real masks" if real.any()
                      else 'data.real_masks pastes masks of class "real"' if cutouts is not None else "")
        classifies = cfg.loss.mask > 0 or cfg.loss.dec > 0
        if real_class and cfg.model.decouple and classifies and cfg.model.num_mask_types < len(MASK_CLASSES):
            raise ValueError(f"{real_class}: the mask classifier needs model.num_mask_types: {len(MASK_CLASSES)} "
                             f"({', '.join(MASK_CLASSES)})")
        self.nets = build_nets(cfg, self.num_classes)
        torch.manual_seed(cfg.train.seed + self.env.rank)
        for module in [*self.nets.modules().values(), self.nets.teacher]:
            if module is not None:
                module.to(self.env.device)
                if cfg.train.channels_last:
                    module.to(memory_format=torch.channels_last)
        self.run_dir = Path(cfg.train.out_dir)
        self.teacher_targets = None
        if self.nets.teacher is not None:
            from meer.train.teacher import teacher_targets

            self.teacher_targets = teacher_targets(
                self.nets.teacher, self.faces, self.run_dir, cfg.teacher.batch_size, self.env, progress
            )
            if real.any():
                self.teacher_targets = unmasked_means(self.teacher_targets, self.faces)
            self.teacher_targets = self.teacher_targets.to(self.env.device)
            if cfg.model.pretrained and cfg.model.embedding_dim == self.teacher_targets.shape[-1]:
                # The student starts as the teacher, so the teacher's class means are centres it
                # already agrees with: the margin loss starts small instead of tearing the
                # pretrained features towards random centres. (A resumed run loads its own.)
                self.nets.classifier.load_full_weight(class_means(self.teacher_targets[:, 0], self.faces.labels))
        self.progress = progress and self.env.is_main
        self.dataset = MaskedFaces(
            self.faces,
            mask_renderer(cfg.data.mask_types) if cfg.data.mask_prob > 0 else None,
            cfg.data.mask_prob,
            cfg.data.hflip,
            cfg.train.seed,
            cutouts,
            cfg.data.real_mask_share if cutouts is not None else 0.0,
        )
        cuda = self.env.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.train.precision == "fp16")
        self.writer = None
        self.preview: torch.Tensor | None = None  # latest masked / restored / clean faces
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ set-up per stage

    def set_trainable(self, stage: StageConfig) -> None:
        """Freeze every group the stage does not train; frozen groups run in eval mode so
        their BatchNorm statistics stay as the earlier stage left them."""
        trained = trained_groups(stage)
        for name, module in self.nets.modules().items():
            if module is None:
                continue
            trainable = name in trained
            module.train(trainable)
            for param in module.parameters():
                param.requires_grad_(trainable)
        refiner = self.nets.model.occlusion_refiner
        if refiner is not None:  # no stage trains it (bench/train_occlusion.py does); model.init brings its weights
            refiner.eval().requires_grad_(False)
        backbone = self.nets.model.backbone
        features = getattr(backbone.head, "features", None)
        if features is not None:  # IResNet's fixed-scale BN never trains (as in arcface_torch)
            features.weight.requires_grad_(False)
        if "backbone" in stage.train:
            frozen = self.cfg.model.frozen_stages
            for module in [backbone.stem, *backbone.stages[:frozen]] if frozen else []:
                module.eval()
                module.requires_grad_(False)
            if self.cfg.model.pretrained:
                # A pretrained network keeps the BatchNorm statistics of the millions of faces it
                # learned from: small fine-tuning batches (half of them masked) would shift them.
                for module in backbone.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()

    def build_stage(self, stage: StageConfig) -> StageState:
        self.set_trainable(stage)
        optim, modules = self.cfg.optim, self.nets.modules()

        def params(groups) -> list[nn.Parameter]:
            return [p for g in groups if modules[g] is not None for p in modules[g].parameters() if p.requires_grad]

        optimisers: dict[str, torch.optim.Optimizer] = {}
        trained = trained_groups(stage)
        lr = optim.lr * stage.lr_scale
        names = [g for g in (*RECOGNISER_GROUPS, "projection") if g in trained]
        if optim.head_lr_scale == 1.0:  # one parameter group, as in checkpoints from before head_lr_scale
            recogniser = [{"params": params(names)}]
        else:
            recogniser = [{"params": params([g for g in names if g == "backbone"])},
                          {"params": params([g for g in names if g != "backbone"]), "lr": lr * optim.head_lr_scale}]
        recogniser = [group for group in recogniser if group["params"]]
        if recogniser:
            if optim.optimizer == "sgd":
                optimisers["recogniser"] = torch.optim.SGD(
                    recogniser, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay
                )
            else:
                optimisers["recogniser"] = torch.optim.AdamW(recogniser, lr=lr, weight_decay=optim.weight_decay)
        betas = tuple(optim.betas)
        if "generator" in stage.train:
            optimisers["generator"] = torch.optim.Adam(params(["generator"]), lr=optim.gen_lr * stage.lr_scale, betas=betas)
        train_d = "discriminator" in stage.train and self.nets.discriminator is not None
        if train_d:
            optimisers["discriminator"] = torch.optim.Adam(
                params(["discriminator"]), lr=optim.disc_lr * stage.lr_scale, betas=betas
            )
        factor = lr_lambda(stage, optim.warmup_steps, optim.schedule)
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimisers.items()}

        # DDP wraps what trains in each step. The discriminator's parameters are frozen while
        # the generator step is wrapped, so that wrapper never waits for their gradients.
        if self.nets.discriminator is not None:
            self.nets.discriminator.requires_grad_(False)
        g_step: nn.Module = GeneratorStep(self.nets, self.cfg, set(stage.losses))
        d_step: nn.Module | None = DiscriminatorStep(self.nets) if train_d else None
        if self.env.distributed:
            ids = [self.env.local_rank] if self.env.device.type == "cuda" else None
            if isinstance(self.nets.classifier, ShardedMarginSoftmaxLoss):
                # Each rank owns different centres: DDP must neither broadcast nor average them.
                DDP._set_params_and_buffers_to_ignore_for_model(g_step, ["classifier.weight"])
            g_step = DDP(g_step, device_ids=ids)
            if d_step is not None:
                self.nets.discriminator.requires_grad_(True)
                d_step = DDP(d_step, device_ids=ids)
        if self.cfg.train.compile:
            g_step = torch.compile(g_step)
        if self.nets.discriminator is not None:
            # Off during the generator step (no stray gradients); train_step turns it on.
            self.nets.discriminator.requires_grad_(False)
        return StageState(stage, optimisers, schedulers, g_step, d_step)

    def loader(self, start_step: int) -> DataLoader:
        sampler = StepSampler(
            len(self.dataset), self.cfg.data.batch_size, self.cfg.train.seed, start_step, self.env.rank,
            self.env.world_size, self.probabilities,
        )
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.data.workers,
            pin_memory=self.env.device.type == "cuda",
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ the loop

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()}
        if self.teacher_targets is not None:
            out["teacher"] = self.teacher_targets[out["index"], out["flipped"]]
        if self.cfg.train.channels_last:
            for key in ("masked", "clean"):
                out[key] = out[key].contiguous(memory_format=torch.channels_last)
        return out

    def clip_and_step(self, optimisers: list[torch.optim.Optimizer]) -> None:
        for optimiser in optimisers:
            if self.cfg.optim.grad_clip > 0:
                self.scaler.unscale_(optimiser)
                params = [p for group in optimiser.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
            self.scaler.step(optimiser)

    def train_step(self, state: StageState, batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One optimiser step over ``len(batches)`` accumulated micro-batches. Returns the loss
        parts as detached tensors on the device: reading them (a device sync) is left to the
        logging, every ``log_every`` steps."""
        g_optimisers = [o for k, o in state.optimisers.items() if k != "discriminator"]
        d_optimiser = state.optimisers.get("discriminator")
        for optimiser in state.optimisers.values():
            optimiser.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        restored_batches = []
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not isinstance(state.g_step, DDP) else state.g_step.no_sync()
            with sync:
                with self.autocast():
                    total, parts, restored = state.g_step(batch)
                self.scaler.scale(total / len(batches)).backward()
            restored_batches.append(restored)
            for key, value in [*parts.items(), ("total", total)]:
                sums[key] = sums.get(key, 0.0) + value.detach().float() / len(batches)
        if restored is not None and self.cfg.train.tensorboard:
            self.preview = torch.cat([batch["masked"][:8], restored[:8], batch["clean"][:8]]).detach()
        self.clip_and_step(g_optimisers)

        if d_optimiser is not None and state.d_step is not None:
            self.nets.discriminator.requires_grad_(True)
            for i, (batch, restored) in enumerate(zip(batches, restored_batches)):
                last = i == len(batches) - 1
                sync = contextlib.nullcontext() if last or not isinstance(state.d_step, DDP) else state.d_step.no_sync()
                with sync:
                    with self.autocast():
                        d_loss, d_parts = state.d_step(batch, restored)
                    self.scaler.scale(d_loss / len(batches)).backward()
                for key, value in [("d_loss", d_loss), *d_parts.items()]:
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / len(batches)
            self.clip_and_step([d_optimiser])
            self.nets.discriminator.requires_grad_(False)
        self.scaler.update()
        for scheduler in state.schedulers.values():
            scheduler.step()
        return sums

    def fit(self, resume: bool = True) -> list[dict[str, float]]:
        """Run all stages (continuing from the latest checkpoint when ``resume``).

        Returns the logged history: one dict per logged step with ``stage``, ``step`` and the
        loss parts.
        """
        stages = self.cfg.stages
        start_stage, start_step, restored = 0, 0, None
        latest = ckpt.latest_checkpoint(self.run_dir) if resume else None
        if not resume and self.env.is_main:
            self.set_aside_previous_run()
        if latest is not None:
            start_stage, start_step, restored = self.restore(latest)
            if self.env.is_main and start_stage < len(stages):
                log.info("resuming from %s (stage %s, step %d)", latest, stages[start_stage].name, start_step)
            elif self.env.is_main:
                log.info("%s finished every stage; nothing left to train", latest)
        if self.env.is_main:
            self.save_run_info(resumed_from=latest)
        offset = sum(s.steps for s in stages[:start_stage])
        for index in range(start_stage, len(stages)):
            stage = stages[index]
            first = start_step if index == start_stage else 0
            state = self.build_stage(stage)
            if restored is not None and index == start_stage:
                self.load_optimisation_state(state, restored)
            self.run_stage(index, state, offset, first)
            offset += stage.steps
        if self.cfg.train.channels_last:
            # hand back the default layout: then the model computes exactly what load_model() gives
            for module in self.nets.modules().values():
                if module is not None:
                    module.to(memory_format=torch.contiguous_format)
        self.close()
        return self.history

    def run_stage(self, index: int, state: StageState, offset: int, first: int) -> None:
        stage, cfg = state.stage, self.cfg
        if first >= stage.steps:
            return
        if self.env.is_main:
            log.info("stage %d/%d %s: %d steps, training %s, losses %s", index + 1, len(cfg.stages), stage.name,
                     stage.steps, ",".join(stage.train), ",".join(stage.losses))
        accumulation = cfg.train.accumulation
        batches = iter(self.loader(offset * accumulation + first * accumulation))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=stage.steps, initial=first, desc=f"{stage.name}", unit="step", dynamic_ncols=True, leave=False)
        images_per_step = cfg.data.batch_size * accumulation * self.env.world_size
        tick = time.perf_counter()
        window: dict[str, torch.Tensor] = {}  # summed on the device; read only when logged
        window_steps = 0
        for step in range(first, stage.steps):
            micro = [self.to_device(next(batches)) for _ in range(accumulation)]
            parts = self.train_step(state, micro)
            for key, value in parts.items():
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
            done = step + 1
            if done % cfg.train.log_every == 0 or done == stage.steps:
                elapsed = time.perf_counter() - tick
                record = {k: float(all_reduce_mean(v / window_steps)) for k, v in window.items()}
                record["images_per_s"] = images_per_step * window_steps / max(elapsed, 1e-9)
                record["lr"] = next(iter(state.optimisers.values())).param_groups[0]["lr"]
                self.log(stage, index, done, record)
                window, window_steps, tick = {}, 0, time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{record['total']:.3f}", img_s=f"{record['images_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
            if done % cfg.train.ckpt_every == 0 or done == stage.steps:
                self.save(index, done, state)
        if bar is not None:
            bar.close()

    # ------------------------------------------------------------------ logging and checkpoints

    def log(self, stage: StageConfig, index: int, step: int, record: dict[str, float]) -> None:
        entry = {"stage": stage.name, "stage_index": index, "step": step, **record}
        self.history.append(entry)
        if not self.env.is_main:
            return
        with open(self.run_dir / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        losses = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("images_per_s", "lr"))
        log.info("%s %d/%d %s | %.1f img/s lr=%.2e", stage.name, step, stage.steps, losses,
                 record["images_per_s"], record["lr"])
        if self.cfg.train.tensorboard:
            if self.writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            global_step = sum(s.steps for s in self.cfg.stages[:index]) + step
            for key, value in record.items():
                group = "perf" if key in ("images_per_s", "lr") else f"train/{stage.name}"
                self.writer.add_scalar(f"{group}/{key}", value, global_step)
            if self.preview is not None:  # rows: masked inputs, restored faces, clean faces
                grid = tile_images(self.preview, columns=len(self.preview) // 3)
                self.writer.add_image(f"images/{stage.name}", grid, global_step)
                self.preview = None
            self.writer.flush()

    def set_aside_previous_run(self) -> None:
        """Starting over in a folder that holds a run: move its checkpoints and history aside
        (``*.replaced-<time>``) rather than mixing two runs or deleting anything."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in ("checkpoints", "history.jsonl"):
            path = self.run_dir / name
            if path.exists():
                target = path.with_name(f"{name}.replaced-{stamp}")
                path.rename(target)
                log.warning("starting over: moved the previous %s to %s", name, target)

    def save_run_info(self, resumed_from: Path | None = None) -> None:
        """``config.yaml`` and ``run.json`` (seed, versions, command line, ...). A resumed run keeps
        what its first launch recorded and adds the resumption to ``run.json``'s ``resumes``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        now = {
            "seed": self.cfg.train.seed,
            "versions": versions(),
            "world_size": self.env.world_size,
            "device": str(self.env.device),
            "num_identities": self.num_classes,
            "num_images": len(self.faces),
            "argv": sys.argv,
        }
        info, path = now, self.run_dir / "run.json"
        if resumed_from is not None and path.is_file():
            info = json.loads(path.read_text())
            info.setdefault("resumes", []).append(
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from": resumed_from.name, **now})
        atomic_write_json(path, info)

    def trim_history(self, index: int, step: int) -> None:
        """Drop the logged rows after the checkpoint a run resumes from (they are logged again)."""
        path = self.run_dir / "history.jsonl"
        if not path.is_file():
            return
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [r for r in rows if (json.loads(r)["stage_index"], json.loads(r)["step"]) <= (index, step)]
        if len(kept) < len(rows):
            atomic_write_text(path, "".join(r + "\n" for r in kept))

    def save(self, index: int, step: int, state: StageState) -> None:
        tensors = self.weight_tensors()  # a collective call when the centres are sharded
        if not self.env.is_main:
            return
        stage = state.stage
        train_state = {
            "optimisers": {k: o.state_dict() for k, o in state.optimisers.items()},
            "schedulers": {k: s.state_dict() for k, s in state.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            train_state["cuda_rng"] = torch.cuda.get_rng_state_all()
        meta = {
            "stage_index": index,
            "stage": stage.name,
            "step": step,
            "num_classes": self.num_classes,
            "world_size": self.env.world_size,
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }
        global_step = sum(s.steps for s in self.cfg.stages[:index]) + step
        ckpt.save_checkpoint(
            self.run_dir, f"step_{global_step:08d}", tensors, train_state, meta, self.cfg.train.keep_checkpoints
        )

    def weight_tensors(self) -> dict[str, torch.Tensor]:
        """Every network's weights, unwrapped, with the full (gathered) class-centre matrix."""
        tensors = ckpt.flat_state(
            {"model": self.nets.model, "discriminator": self.nets.discriminator, "projection": self.nets.projection}
        )
        tensors["centres.weight"] = self.nets.classifier.full_weight().cpu().contiguous().clone()
        return tensors

    def restore(self, path: Path) -> tuple[int, int, dict[str, Any] | None]:
        """Load weights from ``path``; returns (stage index, step, training state)."""
        meta = ckpt.read_state(path)
        if meta["num_classes"] != self.num_classes:
            raise ValueError(f"{path} was trained on {meta['num_classes']} identities, this data has {self.num_classes}")
        then, now = dataclasses.asdict(config_from_dict(meta["config"]).model), dataclasses.asdict(self.cfg.model)
        changed = [k for k in now if k not in ("pretrained", "init") and then.get(k) != now[k]]
        if changed:
            raise ValueError(f"{path} holds another model (model.{changed[0]}: {then.get(changed[0])!r} there, "
                             f"{now[changed[0]]!r} now): train into another train.out_dir, or start over with --no-resume")
        tensors = ckpt.load_weights(path)
        self.nets.model.load_state_dict(ckpt.split_state(tensors, "model"))
        if self.nets.discriminator is not None:
            self.nets.discriminator.load_state_dict(ckpt.split_state(tensors, "discriminator"))
        if self.nets.projection is not None:
            self.nets.projection.load_state_dict(ckpt.split_state(tensors, "projection"))
        self.nets.classifier.load_full_weight(tensors["centres.weight"].to(self.env.device))
        train_state = ckpt.load_train_state(path)
        torch.set_rng_state(train_state["torch_rng"])
        if "cuda_rng" in train_state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(train_state["cuda_rng"])
        index, step = meta["stage_index"], meta["step"]
        if self.env.is_main:
            self.trim_history(index, step)
        if step >= self.cfg.stages[index].steps:  # the checkpoint closed its stage
            index, step, train_state = index + 1, 0, None
        return index, step, train_state

    def load_optimisation_state(self, state: StageState, train_state: dict[str, Any] | None) -> None:
        if train_state is None:
            return
        for key, optimiser in state.optimisers.items():
            optimiser.load_state_dict(train_state["optimisers"][key])
        for key, scheduler in state.schedulers.items():
            scheduler.load_state_dict(train_state["schedulers"][key])
        self.scaler.load_state_dict(train_state["scaler"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tile_images(images: torch.Tensor, columns: int) -> torch.Tensor:
    """``[N, 3, S, S]`` in [-1, 1] -> one ``[3, rows*S, columns*S]`` image in [0, 1]."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    padded = torch.cat([images, images.new_full((rows * columns - n, c, h, w), -1.0)])
    grid = padded.view(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)
    return ((grid.float().clamp(-1, 1) + 1) / 2).cpu()

