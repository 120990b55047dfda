"""The PyTorch port of dlib's face-recognition ResNet computes dlib's descriptors.

Two checks: against descriptors dlib computed on procedurally generated faces (stored in
tests/fixtures; needs only the weights package, face-recognition-models), and, where dlib
itself is installed, against dlib live on real LFW faces aligned by dlib's own pipeline.
Regenerate the fixture with ``python tests/models/test_dlib_port.py --write`` (needs dlib).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meer.data.dataset import to_tensor
from meer.data.synthetic import SyntheticFaces
from meer.models.backbones.dlib_resnet import (
    DlibResNet,
    add_padded,
    find_dlib_model,
    read_dlib_weights,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dlib_synthetic_descriptors.json"


def weights_file() -> Path:
    try:
        return find_dlib_model()
    except FileNotFoundError:
        pytest.skip("face-recognition-models (dlib's weights) is not installed")


def reference_faces(spec: dict) -> np.ndarray:
    return SyntheticFaces(spec["identities"], spec["per_identity"], spec["size"], spec["seed"]).generate().images


def test_add_padded_sums_over_the_larger_shape_with_zeros():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = add_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.equal(out[:, :2, :3, :3], torch.full((1, 2, 3, 3), 3.0))
    assert torch.equal(out[:, 2:], torch.full((1, 2, 4, 4), 2.0))
    assert torch.equal(out[:, :2, 3, :], torch.full((1, 2, 4), 2.0))


def test_weights_file_parses_into_the_architecture():
    weights = read_dlib_weights(weights_file())
    model = DlibResNet()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in weights.items()} == shapes
    np.testing.assert_allclose(weights["input_mean"], [122.782, 117.001, 104.298], atol=1e-3)


def test_read_refuses_a_file_that_is_not_the_resnet(tmp_path):
    bogus = tmp_path / "bogus.dat"
    bogus.write_bytes(b"\x01\x05con_4" + bytes(100))
    with pytest.raises(ValueError, match="does not look like dlib"):
        read_dlib_weights(bogus)


def test_port_matches_stored_dlib_descriptors():
    spec = json.loads(FIXTURE.read_text())
    model = DlibResNet().load_dlib(weights_file()).eval()
    with torch.no_grad():
        ours = model(to_tensor(reference_faces(spec))).numpy()
    reference = np.array(spec["descriptors"], np.float32)
    assert np.abs(ours - reference).max() <= 1e-4
    # and the descriptors separate the identities as dlib's do (a live, non-constant output)
    assert np.linalg.norm(ours[0] - ours[1]) != pytest.approx(0.0, abs=1e-3)


@pytest.mark.data
def test_port_matches_dlib_live_on_real_faces(shared_data):
    pytest.importorskip("dlib")
    import cv2

    from bench.peers.dlib import DlibPipeline

    peer = DlibPipeline()
    paths = sorted((shared_data / "lfw").glob("*/*.jpg"))[::600][:12]
    chips = []
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        box = peer.main_box(image)
        if box is not None:
            chips.append(peer.chip(image, box))
    assert len(chips) >= 8
    chips = np.stack(chips)
    reference = peer.describe_chips(chips)
    model = DlibResNet().load_dlib().eval()
    with torch.no_grad():
        ours = model(to_tensor(chips)).numpy()
    assert np.abs(ours - reference).max() <= 1e-4


def write_reference() -> None:
    import dlib

    spec = {"identities": 3, "per_identity": 2, "size": 150, "seed": 7}
    encoder = dlib.face_recognition_model_v1(str(find_dlib_model()))
    descriptors = [[round(float(v), 8) for v in encoder.compute_face_descriptor(np.ascontiguousarray(image))]
                   for image in reference_faces(spec)]
    about = f"dlib {dlib.__version__} compute_face_descriptor of SyntheticFaces(3, 2, size=150, seed=7) images"
    FIXTURE.write_text(json.dumps({"about": about, **spec, "descriptors": descriptors}) + "\n")


if __name__ == "__main__" and "--write" in sys.argv:
    write_reference()
