"""`FaceModel.verify` / `unmask` / `identify` and the service's limits, on an untrained 32 px MEER
built in milliseconds, so that mutation testing can run them for every mutant (issue #18).

What the network says is steered where a test needs it: the mask head's bias picks the mask class
every face gets. The service is called in-process through ASGI, with the request body handed
over in chunks the test controls (Content-Length honest, missing or lying)."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from meer.api import FaceModel, Gallery
from meer.api.model import FALLBACK_THRESHOLD, mask_type_name
from meer.calibration import Calibration
from meer.config import load_config
from meer.data.dataset import to_tensor
from meer.data.masks import MASK_CLASSES
from meer.gallery import enroll_photos, identify_photo, open_gallery
from meer.inference.batched import embed_images, unmask_images
from meer.inference.checkpoint import STATE
from meer.models.meer import build_model
from meer.web import Limits, create_app
from meer.web.app import DRAIN_FACTOR

from .conftest import TINY

THRESHOLDS = {"U-U": 0.2, "M-U": 0.5, "M-M": 0.8}


def calibration(thresholds=THRESHOLDS) -> Calibration:
    return Calibration(threshold=thresholds["M-U"], protocol="test", setting="M-U", thresholds=dict(thresholds))


@pytest.fixture
def model(tmp_path):
    cfg = load_config("tiny", TINY)
    torch.manual_seed(0)
    network = build_model(cfg.model).eval()
    (tmp_path / STATE).write_text('{"step": 1}')
    return FaceModel(network, cfg, tmp_path, calibration(), detector=None)


def wear(model: FaceModel, mask_class: int) -> None:
    """Every face gets ``mask_class`` from the mask classifier."""
    head = model.network.decouple.mask_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[mask_class] = 10.0


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


# ---------------------------------------------------------------------- verify


@pytest.mark.parametrize("mask_class, setting, masked", [(0, "U-U", (False, False)), (2, "M-M", (True, True))])
def test_verify_scores_the_two_embeddings_at_the_threshold_of_their_setting(model, mask_class, setting, masked):
    wear(model, mask_class)
    a, b = crops(2)
    result = model.verify(a, b, aligned=True)
    expected = embed_images(model.network, np.stack([a, b]))
    assert result.score == pytest.approx(float(expected[0] @ expected[1]), abs=1e-6)
    assert (result.setting, result.masked, result.threshold) == (setting, masked, THRESHOLDS[setting])
    assert result.same == (result.score >= THRESHOLDS[setting]) and result.calibrated
    assert [f.aligned.tobytes() for f in result.faces] == [a.tobytes(), b.tobytes()]


def test_verify_calls_a_score_on_the_threshold_the_same_person(model):
    wear(model, 0)
    a, b = crops(2)
    score = model.verify(a, b, aligned=True).score
    model.calibration = calibration({**THRESHOLDS, "U-U": score})
    assert model.verify(a, b, aligned=True).same
    model.calibration = calibration({**THRESHOLDS, "U-U": float(np.nextafter(score, 2.0))})
    assert not model.verify(a, b, aligned=True).same


def test_one_masked_face_is_the_m_u_setting_and_no_verdict_counts_as_one(model, monkeypatch):
    a, b = crops(2)
    embed = model.embed
    monkeypatch.setattr(model, "embed_with_verdicts", lambda faces: (embed(faces), [True, False]))
    assert model.verify(a, b, aligned=True).setting == "M-U"
    monkeypatch.setattr(model, "embed_with_verdicts", lambda faces: (embed(faces), [None, None]))  # no mask classifier
    result = model.verify(a, b, aligned=True)
    assert (result.setting, result.threshold) == ("M-U", 0.5)


def test_without_a_calibration_every_setting_uses_the_fallback_threshold(model):
    model.calibration = None
    assert not model.calibrated and model.threshold == FALLBACK_THRESHOLD
    assert [model.threshold_for(s) for s in (None, "U-U", "M-M")] == [FALLBACK_THRESHOLD] * 3
    wear(model, 0)
    assert model.verify(*crops(2), aligned=True).threshold == FALLBACK_THRESHOLD


def test_mask_verdicts_name_every_class_but_none_a_mask(model):
    for mask_class in range(len(MASK_CLASSES) - 1):
        wear(model, mask_class)
        assert model.mask_verdicts(crops(3), aligned=True) == [mask_class != 0] * 3
    assert model.mask_verdicts([], aligned=True) == []
    model.network.decouple = None
    assert model.mask_verdicts(crops(2), aligned=True) == [None, None]


def test_embed_with_verdicts_is_embed_and_mask_verdicts_in_one(model):
    wear(model, 2)
    faces = crops(3)
    embeddings, masked = model.embed_with_verdicts(faces, aligned=True)
    assert np.array_equal(embeddings, model.embed(faces, aligned=True)) and masked == [True] * 3
    empty, none = model.embed_with_verdicts([], aligned=True)
    assert empty.shape == (0, model.embedding_dim) and none == []
    model.network.decouple = None
    assert model.embed_with_verdicts(faces, aligned=True)[1] == [None] * 3


def passes(network) -> list[int]:
    """The number of faces of each call of the network from now on."""
    rows = []
    network.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    return rows


@pytest.mark.parametrize("flip", [False, True])
def test_verify_enrol_and_identify_run_the_network_once_per_face(model, tmp_path, flip):
    model.flip = flip
    per_face = 2 if flip else 1  # the mirrored face is a pass of its own
    rows = passes(model.network)
    model.verify(*crops(2), aligned=True)
    assert sum(rows) == 2 * per_face
    gallery = open_gallery(tmp_path / "g.db", model)
    rows.clear()
    enroll_photos(gallery, model, "ann", crops(3), aligned=True)  # masked: the model's verdict
    assert sum(rows) == 3 * per_face
    rows.clear()
    identify_photo(gallery, model, crops(1, seed=1)[0], aligned=True)
    assert sum(rows) == per_face


# ---------------------------------------------------------------------- unmask


@pytest.mark.parametrize("mask_class", [1, 3])
def test_unmask_returns_the_generators_restoration_and_the_mask_it_found(model, mask_class):
    wear(model, mask_class)
    face = crops(1)[0]
    result = model.unmask(face, aligned=True)  # mirrored restoration averaged in by default
    expected = unmask_images(model.network, face[None], batch_size=1, flip=True)
    assert np.array_equal(result.restored, expected.restored[0])
    assert np.array_equal(result.occlusion, expected.occlusion[0])
    once = model.unmask(face, aligned=True, flip=False)
    assert np.array_equal(once.restored, unmask_images(model.network, face[None], batch_size=1).restored[0])
    assert not np.array_equal(once.restored, result.restored)
    assert result.mask_detected and result.mask_type == mask_type_name(mask_class) == MASK_CLASSES[mask_class]
    assert np.array_equal(result.aligned, face) and result.face.aligned is result.aligned


def test_batched_unmasking_runs_the_generator_only_on_the_faces_found_masked(model):
    faces = np.stack(crops(5, seed=3))
    everything = unmask_images(model.network, faces, batch_size=4)
    bare = torch.tensor([True, False, True, True, False])  # the faces the classifier calls unmasked
    calls = []
    head, generator = model.network.decouple.mask_head, model.network.generator
    hook = generator.register_forward_hook(lambda module, args, out: calls.append(len(out)))

    encodes = []

    def classify(module, args, out):  # class 0 (none) or 2 by the face's place in the batches of 4
        encodes.append(len(out))
        logits = torch.full_like(out, -10.0)
        picked = bare[:4] if len(out) == 4 else bare[4:]
        logits[:, 0] = torch.where(picked, 10.0, -10.0)
        logits[:, 2] = torch.where(picked, -10.0, 10.0)
        return logits

    with head.register_forward_hook(classify):
        out = unmask_images(model.network, faces, batch_size=4, masked_only=True)
    hook.remove()
    assert calls == [1, 1]  # one masked face in each batch of the generator's
    assert encodes == [4, 1]  # each face encoded once: the masked ones are not encoded again
    assert out.mask_type.tolist() == [0, 2, 0, 0, 2]
    for i in (1, 4):
        assert np.abs(out.restored[i].astype(int) - everything.restored[i]).max() <= 1
        assert np.array_equal(out.region[i], everything.region[i])
    for i in (0, 2, 3):
        assert np.array_equal(out.restored[i], faces[i]) and not out.region[i].any()
    assert everything.region.any()  # the model repaints something, so the above can tell


@pytest.mark.parametrize("mask_class", [0, 3])
def test_enrolling_photos_counts_the_masked_ones_by_the_mask_classifier_without_unmasking(model, tmp_path, mask_class):
    wear(model, mask_class)
    calls = []
    model.network.generator.register_forward_hook(lambda *_: calls.append(1))
    person = enroll_photos(open_gallery(tmp_path / "g.db", model), model, "ann", crops(3), aligned=True)
    assert (person.templates, person.masked, calls) == (3, 3 if mask_class else 0, [])
    # one photo given as itself, not in a list
    assert enroll_photos(open_gallery(tmp_path / "g.db", model), model, "bob", crops(1)[0], aligned=True).templates == 1


def test_unmask_says_when_no_mask_was_found_and_refuses_without_a_generator(model):
    wear(model, 0)
    face = crops(1)[0]
    result = model.unmask(face, aligned=True)
    assert not result.mask_detected and result.mask_type == "none"
    assert np.array_equal(result.restored, face)  # nothing to restore: the crop as it is
    with torch.no_grad():
        coarse = model.network.occlusion_probability(model.network(to_tensor(face[None])), 32)[0, 0].numpy()
    np.testing.assert_allclose(result.occlusion, coarse, atol=1e-6)  # still shown, from the recogniser
    model.network.generator = None
    with pytest.raises(ValueError, match=f"^{model.checkpoint} was trained without a generator, so it cannot unmask$"):
        model.unmask(crops(1)[0], aligned=True)


# ---------------------------------------------------------------------- identify


def test_identify_ranks_the_gallery_by_cosine_best_first(model):
    photos = crops(4, seed=1)
    gallery = model.enroll({"ann": [photos[0]], "bob": [photos[1]], "cy": [photos[2], photos[3]]}, aligned=True)
    probe = model.embed(photos[1], aligned=True)[0]
    matches = model.identify(photos[1], gallery, top_k=3, aligned=True)
    expected = gallery.embeddings @ probe
    assert [m.name for m in matches] == [gallery.names[i] for i in np.argsort(-expected)]
    assert matches[0].name == "bob" and matches[0].score == pytest.approx(1.0, abs=1e-5)
    assert [m.score for m in matches] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)
    assert len(model.identify(photos[1], gallery, top_k=2, aligned=True)) == 2


def test_identify_reads_a_saved_gallery_and_wants_one_match_or_more(model, tmp_path):
    photos = crops(3, seed=1)
    gallery = model.enroll({"ann": [photos[0]], "bob": [photos[1]], "cy": [photos[2]]}, aligned=True)
    saved = gallery.save(tmp_path / "people.safetensors")
    assert model.identify(photos[1], saved, aligned=True) == model.identify(photos[1], gallery, aligned=True)
    assert model.identify(photos[1], str(saved), top_k=1, aligned=True)[0].name == "bob"
    for top_k in (0, -1):
        with pytest.raises(ValueError, match=f"top_k must be a whole number of at least 1, got {top_k}"):
            model.identify(photos[1], gallery, top_k=top_k, aligned=True)


def test_identify_keeps_the_gallery_order_between_equal_scores(model):
    probe, other = crops(2)
    # 40 people enrolled from two photos: two groups of equal scores, mixed so that numpy's
    # default (quicksort) order differs from the stable one
    first = [i % 3 == 0 or i % 7 == 0 for i in range(40)]
    people = {f"person {i:02d}": [probe if f else other] for i, f in enumerate(first)}
    gallery = model.enroll(people, aligned=True)
    expected = [n for n, f in zip(people, first) if f] + [n for n, f in zip(people, first) if not f]
    assert [m.name for m in model.identify(probe, gallery, top_k=40, aligned=True)] == expected


def test_by_default_photos_are_detected_and_five_people_named(model):
    photos = crops(7, seed=2)
    gallery = model.enroll({f"p{i}": [p] for i, p in enumerate(photos)}, aligned=True)
    assert len(model.identify(photos[0], gallery, aligned=True)) == 5
    calls = (lambda: model.identify(photos[0], gallery), lambda: model.unmask(photos[0]),
             lambda: model.verify(photos[0], photos[1]), lambda: model.mask_verdicts(photos[:1]))
    for call in calls:
        with pytest.raises(ValueError, match="detector=None: pass aligned crops"):  # it tried to detect
            call()


def test_identify_refuses_a_gallery_of_another_model(model):
    gallery = model.enroll({"ann": crops(1)}, aligned=True)
    foreign = Gallery(gallery.names, gallery.embeddings, gallery.counts, "0123456789abcdef", [])
    with pytest.raises(ValueError, match=f"another model \\(0123456789abcdef, this one is {model.fingerprint}\\)"):
        model.identify(crops(1)[0], foreign, aligned=True)


# ---------------------------------------------------------------------- the service's limits

LIMIT = 4_000


def flat(value: int) -> np.ndarray:
    """A 32 px crop of one colour: its PNG is a few hundred bytes."""
    return np.full((32, 32, 3), 40 * value, np.uint8)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def form(files: list[tuple[str, str, bytes]], pad: int = 0) -> tuple[bytes, str]:
    """A multipart body of pre-aligned ``files`` (``aligned=1``; ``pad`` bytes of a text field
    added) and its content type."""
    boundary = "meerboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, filename, data in files
    ]
    for name, value in [("aligned", b"1"), ("pad", b"x" * pad)]:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(app, path: str, chunks, content_type: str | None, content_length: int | str | None = None,
         token: str | None = None):
    """``(status, JSON, chunks read)``: POST ``chunks`` (an iterator of bytes) to the ASGI app."""
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "http_version": "1.1", "scheme": "http", "server": ("test", 80),
             "client": ("test", 1), "root_path": ""}
    read, sent = [0], []
    chunks = iter(chunks)

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        if chunk == DISCONNECT:
            return {"type": "http.disconnect"}
        read[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), read[0]


DISCONNECT = b"<the client goes away>"


def split(body: bytes, size: int = 500):
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.fixture
def app(model):
    wear(model, 0)
    return create_app(model, Limits(max_upload_bytes=LIMIT, max_pixels=40 * 40, max_files=2))


def error(answer):
    status, body, _ = answer
    return status, body["error"]["code"]


def test_a_body_up_to_the_limit_is_read_and_one_byte_more_is_refused(app):
    files = [("image", "a.png", png(flat(0)))]
    at_limit, kind = form(files, pad=LIMIT - len(form(files)[0]))
    assert len(at_limit) == LIMIT
    status, answer, _ = post(app, "/api/embed", split(at_limit), kind, len(at_limit))
    assert status == 200 and len(answer["faces"]) == 1
    over, _ = form(files, pad=LIMIT - len(form(files)[0]) + 1)
    for declared in (len(over), None, 100):  # honest, missing, lying
        assert error(post(app, "/api/embed", split(over), kind, declared)) == (413, "too_large")


def test_a_declared_length_over_the_limit_is_refused_whatever_arrives(app):
    body, kind = form([("image", "a.png", png(flat(0)))])
    assert error(post(app, "/api/embed", split(body), kind, LIMIT + 1)) == (413, "too_large")
    assert post(app, "/api/embed", split(body), kind, "not a number")[0] == 200  # counted as it arrives


def test_an_endless_upload_is_drained_only_up_to_its_bound(app):
    def endless():
        while True:
            yield b"x" * 1_000

    status, answer, read = post(app, "/api/embed", endless(), "multipart/form-data; boundary=b")
    assert (status, answer["error"]["code"]) == (413, "too_large")
    assert read == DRAIN_FACTOR * LIMIT // 1_000 + 1  # the first chunk past the bound stops the reading


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_only_multipart_forms_are_read(app, content_type):
    body, _ = form([("image", "a.png", png(flat(0)))])
    status, answer, _ = post(app, "/api/embed", [body], content_type, len(body))
    assert (status, answer["error"]["code"]) == (415, "not_multipart")
    assert answer["error"]["message"] == "send the request as multipart/form-data"


@pytest.mark.parametrize("files, code", [(3, "bad_request"), (2, None)])
def test_embed_takes_at_most_max_files_images(app, files, code):
    body, kind = form([("image", f"{i}.png", png(flat(i))) for i in range(files)])
    status, answer, _ = post(app, "/api/embed", [body], kind, len(body))
    if code is None:
        assert status == 200 and len(answer["faces"]) == files
    else:
        assert (status, answer["error"]["code"]) == (400, code) and "Too many files" in answer["error"]["message"]


def test_verify_takes_two_images_at_most(app):
    body, kind = form([("a", "a.png", png(flat(0))), ("b", "b.png", png(flat(0))), ("c", "c.png", png(flat(0)))])
    assert error(post(app, "/api/verify", [body], kind, len(body)))[0] == 400


def test_an_image_over_the_pixel_cap_is_refused_before_decoding_and_named_by_its_field(app):
    big = np.zeros((41, 40, 3), np.uint8)
    body, kind = form([("image", "big.png", png(big))])
    status, answer, _ = post(app, "/api/embed", [body], kind, len(body))
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (413, "image_too_large", "image")
    assert "image (big.png)" in answer["error"]["message"]
    body, kind = form([("image", "fits.png", png(np.zeros((40, 40, 3), np.uint8)))])
    assert post(app, "/api/embed", [body], kind, len(body))[0] != 413


def test_an_upload_without_a_file_name_is_named_by_its_field_alone(app):
    body, kind = form([("image", "", png(np.zeros((41, 40, 3), np.uint8)))])
    status, answer, _ = post(app, "/api/embed", [body], kind, len(body))
    assert status == 413 and answer["error"]["message"].startswith("image is ")


def test_a_client_that_goes_away_mid_upload_gets_a_bad_request(app):
    body, kind = form([("image", "a.png", png(flat(0)))])
    status, answer, _ = post(app, "/api/embed", [body[:100], DISCONNECT], kind, len(body))
    assert (status, answer["error"]) == (
        400, {"code": "bad_request", "message": "the client went away during the upload", "field": None})


def test_the_size_refusal_states_the_limit_in_megabytes(model):
    app = create_app(model, Limits(max_upload_bytes=3 * 2**19))
    body, kind = form([("image", "a.png", png(flat(0)))])
    status, answer, _ = post(app, "/api/embed", [body], kind, 2**21)
    assert (status, answer["error"]["message"]) == (413, "the upload is over the limit of 1.5 MB")


def test_a_form_takes_at_most_eight_fields_besides_its_files(app):
    body, kind = form([("image", "a.png", png(flat(0)))])  # two fields: aligned and pad
    extra = "".join(f'--meerboundary\r\nContent-Disposition: form-data; name="x{i}"\r\n\r\n1\r\n' for i in range(6))
    at_most = extra.encode() + body
    assert post(app, "/api/embed", [at_most], kind, len(at_most))[0] == 200
    one_more = b'--meerboundary\r\nContent-Disposition: form-data; name="x6"\r\n\r\n1\r\n' + at_most
    status, answer, _ = post(app, "/api/embed", [one_more], kind, len(one_more))
    assert (status, answer["error"]["code"]) == (400, "bad_request") and "Too many fields" in answer["error"]["message"]


def test_the_service_runs_the_network_once_per_face(model, tmp_path):
    wear(model, 2)
    app = create_app(model, gallery=open_gallery(tmp_path / "g.db", model), token="t")
    rows = passes(model.network)
    a, b = (png(crop) for crop in crops(2))
    name = b'--meerboundary\r\nContent-Disposition: form-data; name="name"\r\n\r\nann\r\n'
    answers = {}
    for path, files, faces in [("/api/enroll", [("image", "a.png", a), ("image", "b.png", b)], 2),
                               ("/api/verify", [("a", "a.png", a), ("b", "b.png", b)], 2),
                               ("/api/identify", [("image", "a.png", a)], 1)]:
        body, kind = form(files)
        body = name + body if path == "/api/enroll" else body
        rows.clear()
        status, answers[path], _ = post(app, path, [body], kind, len(body), token="t")
        assert (status, sum(rows)) == (200, faces), path
    assert answers["/api/enroll"]["person"]["masked"] == 2
    assert answers["/api/verify"]["masked"] == [True, True] and answers["/api/verify"]["setting"] == "M-M"
    identified = answers["/api/identify"]
    assert set(identified) == {"identified", "score", "threshold", "calibrated", "candidates", "masked", "face"}
    assert (identified["identified"], identified["masked"], identified["threshold"]) == ("ann", True, THRESHOLDS["M-U"])
