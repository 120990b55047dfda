"""Issue 15, item 4: `FaceModel.unmask`, `meer unmask` and the web service show a restoration only
for a face the mask classifier finds masked, and say so otherwise.

The tiny checkpoint's classifier is steered with its bias (a large logit for one class), so each
verdict is certain; its occlusion threshold is lowered so that a region exists to repaint."""

import base64
import io
import json
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

import meer
from meer.data.masks import MASK_TYPES
from meer.data.synthetic import SyntheticFaces

from .apikit import detectable, encode, face_model, photo, served, tiny_run


@pytest.fixture(scope="module")
def crop():
    """An aligned 32 px face (the tiny model's input size)."""
    return SyntheticFaces(num_identities=1, images_per_identity=1, size=32, seed=5).generate().images[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory, crop):
    model = meer.load(tiny_run(tmp_path_factory), detector=None)
    probability = model.unmask(crop, aligned=True).occlusion
    model.network.occlusion_threshold = float(np.quantile(probability, 0.5))  # half the face is "masked"
    return model


def steer(model, verdict: str) -> None:
    """Make the mask classifier answer ``verdict`` whatever it sees."""
    bias = model.network.decouple.mask_head.bias
    bias.data.zero_()
    bias.data[MASK_TYPES.index(verdict)] = 1e4


def test_a_face_without_a_mask_comes_back_unchanged(model, crop):
    steer(model, "none")
    result = model.unmask(crop, aligned=True)
    assert not result.mask_detected and result.mask_type == "none"
    np.testing.assert_array_equal(result.restored, result.aligned)
    steer(model, "surgical")
    result = model.unmask(crop, aligned=True)
    assert result.mask_detected and result.mask_type == "surgical"
    assert (result.restored != result.aligned).any(axis=2).mean() > 0.2  # the region is repainted


def test_cli_says_there_was_nothing_to_restore(model, crop, tmp_path, capsys, monkeypatch):
    from meer.cli import main

    monkeypatch.setattr("meer.cli.unmask.load_from_args", lambda args: model)
    source = tmp_path / "face.png"
    Image.fromarray(crop).save(source)
    steer(model, "none")
    assert main(["unmask", str(source), "-o", str(tmp_path / "out.png"), "--aligned"]) == 0
    out = capsys.readouterr().out
    assert out == f"no mask detected, nothing to restore; the aligned face is written unchanged to {tmp_path / 'out.png'}\n"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), crop)
    steer(model, "n95")
    assert main(["unmask", str(source), "-o", str(tmp_path / "out.png"), "--aligned", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["mask_detected"] is True and answer["restored"] is True and answer["mask_type"] == "n95"
    assert (np.asarray(Image.open(tmp_path / "out.png")) != crop).any()


def test_the_restoration_goes_back_into_the_photo(tmp_path_factory, model):
    import cv2

    picture = photo(*detectable(face_model(tmp_path_factory), 1)[0])
    finder = meer.load(tiny_run(tmp_path_factory))  # with the detector; the classifier steered as above
    finder.network = model.network
    steer(model, "none")
    bare = finder.unmask(picture)
    assert not bare.region.any()
    np.testing.assert_array_equal(bare.in_photo(picture), picture)
    steer(model, "cloth")
    result = finder.unmask(picture)
    pasted = result.in_photo(encode(picture), beyond_crop=False)  # the photo as given: here its PNG bytes
    assert pasted.shape == picture.shape and result.region.max() == 1.0
    to_photo = cv2.invertAffineTransform(result.face.matrix)
    reach = cv2.warpAffine(result.region, to_photo, picture.shape[1::-1]) > 0
    changed = (pasted != picture).any(axis=2)
    assert changed.sum() > 0.5 * reach.sum() and not (changed & ~reach).any()
    # beyond the crop, the repair touches only pixels next to the region (within 0.18 of the crop's side)
    repaired = result.in_photo(picture)
    side = result.region.shape[0] / np.sqrt(abs(np.linalg.det(result.face.matrix[:, :2])))  # in photo px
    near = cv2.distanceTransform((~reach).astype(np.uint8), cv2.DIST_L2, 5) <= 0.18 * side + 3
    assert not ((repaired != pasted).any(axis=2) & ~near).any()
    # a pixel deep inside the repainted region shows the restored crop, enlarged
    y, x = np.argwhere(cv2.erode(result.region, np.ones((3, 3))) == 1.0)[0]
    px, py = np.round(cv2.transform(np.array([[[x, y]]], np.float64), to_photo)[0, 0]).astype(int)
    near = result.restored[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(int)
    assert ((near.min(0) - 1 <= pasted[py, px]) & (pasted[py, px] <= near.max(0) + 1)).all()
    # aligned again, the pasted photo is the restored crop, feathered edge included
    size = result.region.shape[0]
    again = cv2.warpAffine(pasted, result.face.matrix, (size, size), flags=cv2.INTER_AREA).astype(int)
    edge = (result.region > 0.1) & (result.region < 0.9)
    assert edge.sum() > 10 and np.abs(again - result.restored)[edge].mean() < 3
    with pytest.raises(ValueError, match="aligned"):
        finder.unmask(result.aligned, aligned=True).in_photo(picture)
    with pytest.raises(ValueError, match=r"needs the photo the face was found in \(\d+x\d+ px\), not one of"):
        result.in_photo(picture[:-8])


@pytest.fixture(scope="module")
def server(model):
    from meer.web import create_app

    with served(create_app(model)) as url:
        yield url


def post(url: str, fields: dict[str, bytes | str]) -> dict:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', value.encode()
        body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_web_service_restores_only_a_masked_face(model, server, crop):
    steer(model, "none")
    answer = post(server + "api/unmask", {"image": encode(crop), "aligned": "true"})
    assert answer["mask_detected"] is False and answer["restored"] is None
    both = post(server + "api/verify", {"a": encode(crop), "b": encode(crop), "aligned": "true", "images": "true"})
    assert all("restored" not in face and face["mask_detected"] is False for face in both["faces"])
    steer(model, "cloth")
    answer = post(server + "api/unmask", {"image": encode(crop), "aligned": "true"})
    assert answer["mask_detected"] is True and (decode(answer["restored"]) != crop).any()
    both = post(server + "api/verify", {"a": encode(crop), "b": encode(crop), "aligned": "true", "images": "true"})
    assert all(decode(face["restored"]).shape == crop.shape for face in both["faces"])
