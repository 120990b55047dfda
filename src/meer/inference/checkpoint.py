"""Self-describing, atomically written checkpoints.

A checkpoint is a folder ``<run>/checkpoints/step_XXXXXXX/`` holding

* ``weights.safetensors`` — every network's weights (``model.*``, ``centres.*``,
  ``discriminator.*``), loadable without unpickling anything;
* ``train_state.pt`` — optimiser, scheduler and scaler states and RNG states: plain tensors
  and containers, read back with ``torch.load(weights_only=True)``;
* ``state.json`` — format version, stage, step, model arguments, the resolved config and
  package versions.

A *release* folder (``meer export``: ``model.safetensors`` with the inference network's weights,
``model.json`` with the config) is read by the same functions, so everything that loads a
checkpoint for inference loads a release too. :func:`load_model` builds the inference network
of either.

The folder is written under a temporary name and renamed into place, then the ``latest``
pointer file is replaced atomically: a run killed at any moment leaves the previous
checkpoint intact and ``latest`` pointing at a complete one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from meer.config import Config, config_from_dict
from meer.io import atomic_write_text
from meer.models.meer import MEER, build_model

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
TRAIN_STATE = "train_state.pt"
STATE = "state.json"
RELEASE_WEIGHTS = "model.safetensors"
RELEASE_CONFIG = "model.json"


def flat_state(modules: dict[str, torch.nn.Module | None]) -> dict[str, torch.Tensor]:
    """``{"model": m, ...}`` -> ``{"model.backbone...": tensor}``, contiguous and unshared."""
    tensors = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous().clone()
    return tensors


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def save_checkpoint(
    run_dir: str | os.PathLike,
    step_name: str,
    tensors: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write one checkpoint folder atomically and point ``latest`` at it. Returns its path."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name
    tmp = Path(tempfile.mkdtemp(prefix=f".{step_name}.", dir=root))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": f"meer-{FORMAT_VERSION}"})
        torch.save(train_state, tmp / TRAIN_STATE)
        (tmp / STATE).write_text(json.dumps({"format_version": FORMAT_VERSION, **state}, indent=2, sort_keys=True))
        if final.exists():  # the same step saved twice (e.g. end of stage == periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", step_name + "\n")
    prune(root, keep, protect={step_name})
    return final


def prune(root: Path, keep: int, protect: set[str]) -> None:
    """Delete all but the newest ``keep`` step folders (and stale temporary folders)."""
    for stale in root.glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / STATE).is_file() else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if (path / STATE).is_file() or is_release(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"{path} is not a meer checkpoint (no {STATE}) nor a run folder with checkpoints")
    return latest


def is_release(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a release folder written by ``meer export``."""
    return (Path(path) / RELEASE_CONFIG).is_file() and not (Path(path) / STATE).is_file()


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    path = find_checkpoint(path)
    file = path / (RELEASE_CONFIG if is_release(path) else STATE)
    try:
        state = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: the checkpoint is damaged") from err
    if is_release(path):
        if not isinstance(state, dict) or "config" not in state:
            raise ValueError(f"{file} has no config: not a meer release")
        return {"format_version": FORMAT_VERSION, **state}
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {state.get('format_version')!r}; this meer reads format {FORMAT_VERSION}"
        )
    return state


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = find_checkpoint(path)
    if is_release(path):  # the inference network only, named as a checkpoint's "model.*"
        tensors = dequantize_int8(_read_safetensors(path / RELEASE_WEIGHTS))
        return {f"model.{k}": v for k, v in tensors.items()}
    return _read_safetensors(path / WEIGHTS)


# Block-wise int8 weights in a release (``meer export --int8 NAME``): ``NAME.qint8`` holds the
# int8 values, ``NAME.qscale`` one float16 scale per block of INT8_BLOCK input columns.
INT8_BLOCK = 64


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row and block of :data:`INT8_BLOCK` columns
    (``[O, I]`` -> int8 ``[O, I]``, float16 ``[O, ceil(I / block)]``)."""
    rows, cols = weight.shape
    blocks = -(-cols // INT8_BLOCK)
    padded = torch.nn.functional.pad(weight.float(), (0, blocks * INT8_BLOCK - cols)).view(rows, blocks, INT8_BLOCK)
    scale = (padded.abs().amax(dim=2) / 127).clamp(min=1e-12).half()
    values = (padded / scale.float()[..., None]).round().clamp(-127, 127).to(torch.int8)
    return values.view(rows, -1)[:, :cols].contiguous(), scale


def dequantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``NAME.qint8`` / ``NAME.qscale`` pair by the float32 ``NAME``."""
    out = {k: v for k, v in tensors.items() if not k.endswith((".qint8", ".qscale"))}
    for key in [k for k in tensors if k.endswith(".qint8")]:
        name = key.removesuffix(".qint8")
        values, scale = tensors[key].float(), tensors[f"{name}.qscale"].float()
        out[name] = values * scale.repeat_interleave(INT8_BLOCK, dim=1)[:, : values.shape[1]]
    return out


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (OSError, Exception) as err:  # safetensors raises its own error types on damaged files
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{file} could not be read as safetensors: {err}") from err


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(find_checkpoint(path) / TRAIN_STATE, map_location="cpu", weights_only=True)


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has; a one-line ValueError otherwise."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device here (torch {torch.__version__})")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: no MPS device here")
    if found.type not in ("cpu", "cuda", "mps", "meta") and not _backend_available(found.type):
        raise ValueError(f"device {device!r}: not available here (meer runs on cpu, cuda or mps)")
    return found


def _backend_available(kind: str) -> bool:
    """Whether torch has a working backend ``torch.<kind>`` (xpu, ...) with a device."""
    available = getattr(getattr(torch, kind, None), "is_available", None)
    try:
        return callable(available) and bool(available())
    except (RuntimeError, AssertionError):
        return False


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MEER, Config, dict[str, Any]]:
    """The inference network of a checkpoint (folder or run folder) or release, in eval mode.

    Returns (model, config, checkpoint state). Reads only safetensors and JSON.
    """
    device = torch_device(device)
    meta = read_state(path)
    cfg = config_from_dict(meta["config"])
    # the checkpoint holds every weight: no need for (nor dependency on) pretrained files
    model = build_model(dataclasses.replace(cfg.model, pretrained="", init=""))
    load_weights_into(model, path, "the model its config describes")
    return model.to(device).eval(), cfg, meta


def load_weights_into(model: MEER, path: str | os.PathLike, described_by: str) -> None:
    """Copy every weight of the checkpoint or release at ``path`` into ``model`` (same network)."""
    tensors = split_state(load_weights(path), "model")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:  # torch's first line names only the class; the next ones the keys
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:])
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ValueError(f"{path}: weights do not match {described_by}: {detail}") from err
