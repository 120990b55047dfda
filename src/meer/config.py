"""Typed configuration: dataclasses are the schema, YAML files hold the values.

A YAML file may name a ``base:`` (a path relative to it, or a built-in config name) and
list only what differs. Several files can be layered (``--config tiny --config my.yaml``)
and single values overridden (``--set optim.lr=0.05``). Unknown keys and wrong types are
errors with the offending key in the message. The built-in configs are in ``meer/configs/``
(``tiny*``, ``iresnet50*``); the benchmark's recipes are in the repository's ``bench/configs/``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

BACKBONES = ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "dlib_resnet", "sface")
# "dlib": dlib's face-recognition ResNet (backbone dlib_resnet); "sface": SFace (backbone sface)
PRETRAINED = ("", "dlib", "sface")
TEACHERS = ("", "dlib", "sface")
# what a pretrained network needs of the model config: backbone, input size, embedding size
PRETRAINED_SHAPES = {"dlib": ("dlib_resnet", 150, 128), "sface": ("sface", 112, 128)}
# The module groups a stage names in ``train``. The recogniser's share one optimiser (a
# distillation projection, which no stage names, trains with the backbone).
RECOGNISER_GROUPS = ("backbone", "decouple", "centres")
MODULE_GROUPS = (*RECOGNISER_GROUPS, "generator", "discriminator")
LOSS_GROUPS = ("recognition", "synthesis", "feedback")


@dataclass
class ModelConfig:
    backbone: str = "iresnet50"
    width: float = 1.0  # channel multiplier of the IResNet (1.0 = 64/128/256/512)
    input_size: int = 112
    embedding_dim: int = 512
    dropout: float = 0.0
    decouple: bool = True  # the mask decoupling module; False gives a plain ArcFace network
    decouple_prev: bool = True  # occlusion head also reads the feature map before the last
    attention_reduction: int = 8
    grl_strength: float = 1.0  # scale of the reversed gradient from the decoupling adversary into x_id
    num_mask_types: int = 4  # none / surgical / n95 / cloth
    generator: bool = True
    generator_width: int = 32  # channels of the finest decoder level
    generator_arch: str = "skip"  # skip (MEER's first decoder) | gated (gated convolutions) | gated-encoder (the shipped one)
    discriminator_width: int = 64
    discriminator_layers: int = 3
    occlusion_threshold: float = 0.5  # predicted occlusion above this is repainted
    blend_dilate: int = 2  # ... grown by this many pixels (BENCHMARKS.md 8: chosen on validation)
    blend_feather: int = 2  # ... and blended into the input over 2x this many pixels
    # a pixel-level refinement of the predicted occlusion (meer.models.occlusion), trained on
    # rendered masks by bench/train_occlusion.py with the rest of the model frozen
    occlusion_refiner: bool = False
    # the occlusion map the generator reads: coarse (the decoupling module's, upsampled) | refined
    generator_occlusion: str = "coarse"
    pretrained: str = ""  # "dlib" | "sface": start the backbone from that network's trained weights
    frozen_stages: int = 0  # the backbone's stem and first N of its 4 stages keep their weights (4: only its head trains)
    # fine-tuning: start every weight of the model from this checkpoint or release (e.g.
    # src/meer/default_model; after `pretrained`); this section must describe the same network
    init: str = ""
    template: str = ""  # face alignment the network reads: arcface | dlib; "" = the backbone's own

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "dlib_resnet":
            if self.input_size < 64:
                raise ValueError(f"model.input_size must be >= 64 for dlib_resnet (150 for its weights), got {self.input_size}")
        elif self.input_size % 16 or self.input_size < 32:
            raise ValueError(f"model.input_size must be a multiple of 16 and >= 32, got {self.input_size}")
        if self.template not in ("", "arcface", "dlib"):
            raise ValueError(f"model.template must be arcface or dlib (or empty), got {self.template!r}")
        if self.pretrained not in PRETRAINED:
            raise ValueError(f"model.pretrained must be one of {PRETRAINED}, got {self.pretrained!r}")
        shape = PRETRAINED_SHAPES.get(self.pretrained)
        if shape and (self.backbone, self.input_size, self.embedding_dim) != shape:
            raise ValueError(f"model.pretrained: {self.pretrained} needs backbone {shape[0]}, input_size {shape[1]} "
                             f"and embedding_dim {shape[2]}")
        if not 0 <= self.frozen_stages <= 4 or (self.frozen_stages and self.backbone == "dlib_resnet"):
            raise ValueError(f"model.frozen_stages must be in 0..4 (and 0 for dlib_resnet), got {self.frozen_stages}")
        if self.width <= 0:
            raise ValueError(f"model.width must be positive, got {self.width}")
        if self.generator_occlusion not in ("coarse", "refined"):
            raise ValueError(f"model.generator_occlusion must be coarse or refined, got {self.generator_occlusion!r}")
        if self.generator_occlusion == "refined" and not self.occlusion_refiner:
            raise ValueError("model.generator_occlusion refined needs model.occlusion_refiner: true")
        if self.generator and not self.decouple:
            raise ValueError("model.generator needs model.decouple (it is gated by the predicted occlusion)")


    @property
    def alignment(self) -> str:
        """The 5-point template faces are aligned to for this network (see meer.data.faceset)."""
        return self.template or ("dlib" if self.backbone == "dlib_resnet" else "arcface")


@dataclass
class MarginConfig:
    type: str = "arcface"  # arcface | cosface | combined
    scale: float = 64.0
    m1: float = 1.0  # multiplicative angular margin (SphereFace); combined only
    m2: float = 0.5  # additive angular margin (ArcFace)
    m3: float = 0.0  # additive cosine margin (CosFace)

    def __post_init__(self) -> None:
        if self.type not in ("arcface", "cosface", "combined"):
            raise ValueError(f"margin.type must be arcface, cosface or combined, got {self.type!r}")


@dataclass
class LossConfig:
    rec: float = 1.0  # margin softmax on masked inputs
    rec_clean: float = 1.0  # margin softmax on the clean version of the same faces
    occ: float = 1.0  # occlusion map, BCE + Dice
    mask: float = 0.2  # mask presence / type from the mask part
    dec: float = 0.1  # gradient-reversed mask classifier on the identity part (model.grl_strength)
    ortho: float = 0.0  # orthogonality of pooled mask and identity parts
    pix: float = 10.0  # L1 to the clean face
    pix_inside: float = 4.0  # extra L1 weight inside the occlusion
    adv: float = 0.1
    gan_mode: str = "lsgan"  # lsgan | hinge
    id: float = 1.0  # id-preserving: cosine distance restored vs clean embedding
    feat_match: float = 0.0  # discriminator feature matching
    rec_restored: float = 1.0  # joint stage: margin softmax on restored faces

    def __post_init__(self) -> None:
        if self.gan_mode not in ("lsgan", "hinge"):
            raise ValueError(f"loss.gan_mode must be lsgan or hinge, got {self.gan_mode!r}")


@dataclass
class SourceConfig:
    """One of several training sources mixed in every batch (``data.sources``)."""

    path: str  # "synthetic" or a cache written by `meer prepare`
    weight: float = 1.0  # share of the samples drawn from this source (weights are normalised)

    def __post_init__(self) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"data.sources: the weight of {self.path!r} must be a positive number, got {self.weight}")


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or the path of a cache written by `meer prepare`
    # several sources instead of `source`, each a {path, weight}: every batch draws from them by
    # weight (e.g. LFW with synthetic masks plus a cache of real masked photos, see meer prepare)
    sources: list[SourceConfig] = field(default_factory=list)
    synthetic_identities: int = 200
    synthetic_images_per_identity: int = 16
    synthetic_seed: int = 0
    mask_prob: float = 0.5  # share of training samples that get a synthetic mask
    mask_types: list[str] = field(default_factory=lambda: ["surgical", "n95", "cloth"])
    # masks cut out of real masked photos (`meer cutouts`): this share of the masked samples
    # wears one of them (mask class "real", needs model.num_mask_types 5) instead of a drawn mask
    real_masks: str = ""
    real_mask_share: float = 0.5
    real_mask_augment: bool = False  # turn, scale, shift and recolour each pasted cut-out
    hflip: bool = True
    batch_size: int = 128  # per process
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"data.mask_prob must be in [0, 1], got {self.mask_prob}")
        if not 0.0 <= self.real_mask_share <= 1.0:
            raise ValueError(f"data.real_mask_share must be in [0, 1], got {self.real_mask_share}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # recogniser optimiser: sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Learning-rate multiplier of the recogniser's layers outside the backbone (decoupling module,
    # margin centres, distillation projection): fresh layers on a pretrained backbone fine-tuned
    # at a low rate barely move otherwise (the mask classifier stays at chance).
    head_lr_scale: float = 1.0
    gen_lr: float = 2e-4  # generator and discriminator use Adam
    disc_lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant
    grad_clip: float = 5.0  # 0 disables

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optim.optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be cosine or constant, got {self.schedule!r}")
        for key in ("lr", "gen_lr", "disc_lr", "head_lr_scale"):
            if not getattr(self, key) > 0:
                raise ValueError(f"optim.{key} must be positive, got {getattr(self, key)}")
        for key in ("momentum", "weight_decay", "warmup_steps", "grad_clip"):
            if getattr(self, key) < 0:
                raise ValueError(f"optim.{key} must be >= 0, got {getattr(self, key)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class StageConfig:
    """One stage of training: what trains, which losses, how long, at which learning rate."""

    name: str
    steps: int
    train: list[str]
    losses: list[str]
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        for group in self.train:
            if group not in MODULE_GROUPS:
                raise ValueError(f"stage {self.name!r}: unknown module {group!r} in train (choose from {MODULE_GROUPS})")
        for group in self.losses:
            if group not in LOSS_GROUPS:
                raise ValueError(f"stage {self.name!r}: unknown loss group {group!r} (choose from {LOSS_GROUPS})")
        if self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps must be >= 0")


def three_stage_schedule() -> list[StageConfig]:
    """MEER's joint training (docs/design.md, Training stages): recognition, synthesis (recogniser
    frozen), joint refinement."""
    return [
        StageConfig("recognition", 20000, ["backbone", "decouple", "centres"], ["recognition"]),
        StageConfig("synthesis", 10000, ["generator", "discriminator"], ["synthesis"]),
        StageConfig(
            "joint",
            5000,
            ["backbone", "decouple", "centres", "generator", "discriminator"],
            ["recognition", "synthesis", "feedback"],
            lr_scale=0.1,
        ),
    ]


@dataclass
class TeacherConfig:
    """A frozen pretrained recogniser guiding training (docs/design.md, The teacher).

    Its embedding of each clean training face (cached once per run) is the target of the
    student's identity embedding, through a learned linear projection, for the masked face
    (``distill``) and the clean one (``distill_clean``); with ``judge`` it also replaces the
    student as the identity judge of the id-preserving loss on restored faces.
    """

    kind: str = ""  # "" (no teacher) | "dlib" | "sface"
    distill: float = 1.0  # cosine distance, projected student(masked) -> teacher(clean)
    distill_clean: float = 1.0  # the same for the student's clean face
    judge: bool = True  # teacher scores restored faces in the id-preserving loss
    # Photos of real masks (no clean twin): cosine distance, projected student(masked) -> the
    # teacher's mean embedding of the same person's unmasked photos (see meer.train.objectives)
    pull: float = 0.0
    batch_size: int = 64  # for caching the teacher's embeddings

    def __post_init__(self) -> None:
        if self.kind not in TEACHERS:
            raise ValueError(f"teacher.kind must be one of {TEACHERS}, got {self.kind!r}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/meer"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast on CUDA)
    channels_last: bool = False
    compile: bool = False
    accumulation: int = 1
    deterministic: bool = False
    cudnn_benchmark: bool = False  # CUDA: time each convolution's algorithms once, keep the fastest (not when deterministic)
    log_every: int = 50
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = False
    shard_centres: bool = False  # Partial-FC style: each rank holds 1/world_size of the class centres

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.accumulation < 1:
            raise ValueError("train.accumulation must be >= 1")
        for key in ("log_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    margin: MarginConfig = field(default_factory=MarginConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    stages: list[StageConfig] = field(default_factory=three_stage_schedule)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        if self.teacher.pull > 0 and not self.teacher.kind:
            raise ValueError("teacher.pull needs a teacher (teacher.kind): its targets are the teacher's embeddings")
        if self.teacher.kind:
            _, size, _ = PRETRAINED_SHAPES[self.teacher.kind]
            if self.model.input_size != size:
                raise ValueError(f"teacher.kind: {self.teacher.kind} reads {size}x{size} faces; set model.input_size: {size}")
        present = {"decouple": self.model.decouple, "generator": self.model.generator}
        present["discriminator"] = self.model.generator
        for stage in self.stages:
            for group in stage.train:
                if not present.get(group, True):
                    raise ValueError(f"stage {stage.name!r} trains {group!r}, which this model does not have")
            if ("synthesis" in stage.losses or "feedback" in stage.losses) and not self.model.generator:
                raise ValueError(f"stage {stage.name!r} uses synthesis losses but model.generator is false")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading and checking


def builtin_config_dir() -> Path:
    return Path(str(resources.files("meer") / "configs"))


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A path as given, relative to the including file, or a built-in config name."""
    candidates = [Path(name)]
    if relative_to is not None:
        candidates.insert(0, relative_to / name)
    stem = str(name).removesuffix(".yaml")
    candidates.append(builtin_config_dir() / f"{stem}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"config {str(name)!r} not found (neither a file nor a built-in config; "
        f"built-ins: {', '.join(builtin_config_names())})"
    )


def builtin_config_names() -> list[str]:
    root = builtin_config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following its ``base:`` chain. Returns the merged raw dict."""
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"config base cycle: {' -> '.join(map(str, (*_seen, path)))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err.__class__.__name__})") from err
    if raw is None:
        raise ValueError(f"{path} is empty: a config sets something (or names its base: base: tiny)")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = read_yaml(resolve_config_path(base, path.parent), (*_seen, path))
    return deep_merge(parent, raw)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``"optim.lr=0.05"`` -> ``{"optim": {"lr": 0.05}}`` (the value is read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like section.key=value")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return nested


def build(cls: type, raw: Any, where: str) -> Any:
    """Turn a raw dict into dataclass ``cls``, checking every key and type."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key {prefix}{unknown[0]} (valid: {', '.join(sorted(names))})")
    kwargs = {name: convert(hints[name], value, f"{where}.{name}" if where else name) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{where or 'config'}: {err}") from err


def convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def load_config(paths: list[str | Path] | str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Layer config files (each may have a ``base:``) and ``key=value`` overrides into a Config."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    raw: dict[str, Any] = {}
    for name in paths or []:
        raw = deep_merge(raw, read_yaml(resolve_config_path(name)))
    for text in overrides or []:
        raw = deep_merge(raw, parse_override(text))
    return build(Config, upgrade(raw), "")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return build(Config, upgrade(raw), "")


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """Read configs of earlier versions: ``loss.grl_lambda`` is now ``model.grl_strength``."""
    loss = raw.get("loss")
    if isinstance(loss, dict) and "grl_lambda" in loss:
        loss = dict(loss)
        model = {"grl_strength": loss.pop("grl_lambda"), **(raw.get("model") or {})}
        raw = {**raw, "loss": loss, "model": model}
    return raw
