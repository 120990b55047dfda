"""ONNX export of the embedding network and of the unmasking generator.

Uses PyTorch's ``torch.export``-based exporter (needs the ``onnx`` extra: onnx, onnxscript,
onnxruntime) with a dynamic batch dimension, and checks the result against PyTorch with
ONNX Runtime.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meer.models.meer import MEER


class EmbeddingNetwork(nn.Module):
    """``images [B, 3, S, S]`` in [-1, 1] -> unit-norm ``embedding [B, D]`` and, where the model
    has a mask classifier, ``mask_probability [B, C]`` over :data:`meer.data.masks.MASK_CLASSES`
    (class 0: no mask), from which a user picks the verification threshold of a pair's setting."""

    def __init__(self, model: MEER) -> None:
        super().__init__()
        self.model = model
        self.outputs = ("embedding", "mask_probability") if model.decouple is not None else ("embedding",)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        encoded = self.model(images)
        embedding = F.normalize(encoded.embedding)
        if encoded.decoupled is None:
            return embedding
        return embedding, torch.softmax(encoded.decoupled.mask_logits, dim=1)


class UnmaskNetwork(nn.Module):
    """``images [B, 3, S, S]`` -> ``(restored [B, 3, S, S], occlusion probability [B, 1, S, S])``."""

    def __init__(self, model: MEER) -> None:
        super().__init__()
        if model.generator is None:
            raise ValueError("this model has no generator to export")
        self.model = model
        self.outputs = ("restored", "occlusion")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unmasked = self.model.unmask(images)
        return unmasked.restored, unmasked.occlusion


def export_onnx(network: nn.Module, size: int, path: str | Path, max_batch: int = 4096) -> Path:
    """Export ``network`` (eval mode, fp32, CPU) with a dynamic batch axis to ``path``."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with a clear message)
    except ImportError as err:
        raise ValueError("ONNX export needs the onnx extra: pip install 'meer[onnx]'") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per deduplicated weight
    # "torchvision is not installed. Skipping torchvision::nms" (meer uses none of its operators)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    network = network.eval().cpu().float()
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own deprecations, met inside export
        program = torch.onnx.export(network, (example,), dynamo=True, input_names=["images"],
                                    output_names=list(getattr(network, "outputs", ())) or None,
                                    dynamic_shapes=({0: batch},), verbose=False)
    tmp = path.with_suffix(".onnx.tmp")
    program.save(str(tmp))
    tmp.replace(path)
    return path


def onnx_max_abs_diff(network: nn.Module, path: str | Path, images: torch.Tensor) -> list[float]:
    """Largest absolute difference of every output, ONNX Runtime vs PyTorch, on ``images``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        torch_out = network.eval()(images)
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    return [float(np.abs(a - b.numpy()).max()) for a, b in zip(onnx_out, torch_out)]
