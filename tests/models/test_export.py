"""ONNX export of the embedding network and the unmasking generator, checked with ONNX Runtime."""

import pytest
import torch

from meer.export import EmbeddingNetwork, UnmaskNetwork, export_onnx, onnx_max_abs_diff
from meer.models.meer import MEER

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module", params=["coarse map", "refined map"])
def model(request):
    torch.manual_seed(0)
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=32, generator_width=8,
                 occlusion_refiner=request.param == "refined map").eval()
    if model.occlusion_refiner is not None:  # a refiner that corrects: its zero start would be the coarse map
        torch.nn.init.normal_(model.occlusion_refiner.out.weight, std=0.5)
    return model


def test_embedding_network_matches_pytorch(model, tmp_path):
    import onnxruntime as ort

    path = export_onnx(EmbeddingNetwork(model), 32, tmp_path / "embed.onnx")
    images = torch.rand(5, 3, 32, 32) * 2 - 1  # another batch size than the export example
    embedding_diff, mask_diff = onnx_max_abs_diff(EmbeddingNetwork(model), path, images)
    assert embedding_diff < 1e-4 and mask_diff < 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["embedding", "mask_probability"]


def test_unmask_network_matches_pytorch(model, tmp_path):
    import onnxruntime as ort

    network = UnmaskNetwork(model)
    path = export_onnx(network, 32, tmp_path / "unmask.onnx")
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    restored_diff, occlusion_diff = onnx_max_abs_diff(network, path, images)
    assert occlusion_diff < 1e-4
    # The composite thresholds the occlusion: a pixel whose probability sits within float
    # noise of the threshold may fall on either side, so compare every other pixel.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["restored", "occlusion"]
    onnx_restored, _ = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        restored, occlusion = network(images)
    clear = ((occlusion - model.occlusion_threshold).abs() > 1e-4).expand_as(restored)
    assert clear.float().mean() > 0.9
    assert (torch.from_numpy(onnx_restored) - restored)[clear].abs().max() < 1e-4


def test_model_without_generator_cannot_export_unmasking():
    with pytest.raises(ValueError, match="no generator"):
        UnmaskNetwork(MEER("iresnet18", width=0.125, input_size=32, generator=False))
