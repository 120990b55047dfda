"""`meer serve` as a user meets it: a real server process on 127.0.0.1, its JSON API, and the
web page driven in headless Chromium (Debian's; `scripts/install-browser.sh` installs it)."""

import base64
import io
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .apikit import canvas, detectable, encode, face_model, photo, tiny_run, truncated_jpeg, write


def start_server(tmp_path_factory, *extra: str, env: dict | None = None):
    """``meer serve`` on a free port with small limits: 1 MB per request, 0.5 megapixels.

    Yields its URL and stops it afterwards (use with ``yield from``)."""
    command = [
        sys.executable, "-m", "meer", "serve", "-m", str(tiny_run(tmp_path_factory)), "--port", "0",
        "--threads", "1", "--max-upload-mb", "1", "--max-megapixels", "0.5", *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    url = None
    for line in process.stdout:
        log.append(line)
        if line.startswith("meer serve: http://"):
            url = line.split()[2]
            break
    if url is None:
        process.wait(10)
        pytest.fail("meer serve did not start:\n" + "".join(log))
    # keep draining the log so that the server never blocks on a full pipe
    threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "api/health", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("meer serve does not answer:\n" + "".join(log))
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return detectable(face_model(tmp_path_factory), 3)


def request(url, files=(), fields=(), content_type=None, body=None, method="POST", headers=None):
    """``(status, JSON answer)``; ``files``: ``(field, filename, bytes)``; ``fields``: ``(name, value)``
    (a value may be bytes, sent as they are)."""
    if body is None:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in fields:
            value = value if isinstance(value, bytes) else str(value).encode()
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n")
        for name, filename, data in files:
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
            parts.append(head.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def decode(data_url: str, kind: str = "png") -> Image.Image:
    assert data_url.startswith(f"data:image/{kind};base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_health(server):
    with urllib.request.urlopen(server + "api/health", timeout=10) as answer:
        health = json.loads(answer.read())
    assert health["status"] == "ok" and health["model"]["input_size"] == 32
    assert health["model"]["calibrated"] is False and health["limits"]["max_pixels"] == 500_000


def test_verify_with_face_images(server, faces):
    a, b = encode(photo(*faces[0])), encode(photo(*faces[1]))
    status, answer = request(server + "api/verify", [("a", "a.png", a), ("b", "b.png", b)], [("images", "true")])
    assert status == 200 and answer["same"] == (answer["score"] >= answer["threshold"])
    for face, name in zip(answer["faces"], ("a.png", "b.png")):
        assert face["filename"] == name and face["num_faces"] == 1
        assert decode(face["aligned"]).size == (32, 32) and isinstance(face["mask_detected"], bool)
        # a restoration only where the (briefly trained) model finds a mask
        assert ("restored" in face) == ("in_photo" in face) == face["mask_detected"]
        if face["mask_detected"]:
            assert decode(face["restored"]).size == (32, 32)
            # the photo around the face (box grown by half its size each way), the restoration in it
            assert decode(face["in_photo"], "jpeg").format == "JPEG" and max(decode(face["in_photo"], "jpeg").size) <= 280
    status, plain = request(server + "api/verify", [("a", "a.png", a), ("b", "b.png", b)])
    assert status == 200 and "aligned" not in plain["faces"][0] and plain["score"] == answer["score"]


def test_several_faces_answer_for_the_main_one(server, faces):
    group = encode(canvas((*faces[0], 120, 80, 160), (*faces[1], 10, 10, 90)))
    status, answer = request(server + "api/verify", [("a", "group.png", group), ("b", "b.png", group)])
    assert status == 200 and answer["faces"][0]["num_faces"] == 2 and answer["score"] == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize(
    "upload, status, code",
    [
        (b"just text, no pixels", 415, "not_an_image"),
        ("corrupt", 422, "corrupt_image"),
        ("blank", 422, "no_face"),
        ("huge", 413, "image_too_large"),
        (np.random.default_rng(0).bytes(1_200_000), 413, "too_large"),
    ],
)
def test_bad_uploads_get_clear_json_errors(server, faces, upload, status, code):
    good = encode(photo(*faces[0]))
    made = {
        "corrupt": lambda: truncated_jpeg(photo(*faces[0])),
        "blank": lambda: encode(np.full((200, 200, 3), 100, np.uint8)),
        "huge": lambda: encode(np.zeros((800, 800, 3), np.uint8)),  # 0.64 megapixels, a few kB
    }
    data = made[upload]() if isinstance(upload, str) else upload
    got, answer = request(server + "api/verify", [("a", "bad.jpg", data), ("b", "b.png", good)])
    assert got == status and answer["error"]["code"] == code
    if code != "too_large":
        assert answer["error"]["field"] == "a" and "a (bad.jpg)" in answer["error"]["message"]


def test_malformed_requests(server, faces):
    status, answer = request(server + "api/verify", [("a", "a.png", encode(photo(*faces[0])))])
    assert status == 400 and answer["error"] == {"code": "missing_field", "message": "no file in the form field 'b'", "field": "b"}
    status, answer = request(server + "api/verify", body=b"{}", content_type="application/json")
    assert status == 415 and answer["error"]["code"] == "not_multipart"
    try:
        urllib.request.urlopen(server + "api/nothing", timeout=10)
    except urllib.error.HTTPError as err:
        assert err.code == 404 and json.loads(err.read())["error"]["code"] == "not_found"


def test_unmask_and_embed(server, faces):
    status, answer = request(server + "api/unmask", [("image", "a.png", encode(photo(*faces[2])))])
    assert status == 200 and isinstance(answer["mask_detected"], bool) and answer["mask_type"]
    assert decode(answer["restored"]).size == (32, 32) and decode(answer["occlusion"]).mode == "L"
    assert (answer["in_photo"] is None) != answer["mask_detected"]
    if answer["mask_detected"]:
        assert decode(answer["in_photo"], "jpeg").format == "JPEG"
    crop = encode(photo(*faces[2])[100:164, 100:164])
    status, aligned = request(server + "api/unmask", [("image", "crop.png", crop)], [("aligned", "true")])
    assert status == 200 and aligned["in_photo"] is None  # a pre-aligned crop has no photo around it
    files = [("image", f"{i}.png", encode(photo(*face))) for i, face in enumerate(faces[:2])]
    status, answer = request(server + "api/embed", files)
    embeddings = np.array(answer["embeddings"])
    assert status == 200 and embeddings.shape == (2, answer["dim"])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def chromium() -> tuple[str, str]:
    # the Debian package's real binary; /usr/bin/chromium is a wrapper script
    browser = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("headless Chromium not installed: run scripts/install-browser.sh")
    return browser, driver


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1000,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


def test_page_compares_two_uploaded_photos(server, faces, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    a, b = write(tmp_path / "first.png", photo(*faces[0])), write(tmp_path / "second.png", photo(*faces[1]))
    _, expected = request(server + "api/verify", [("a", "a.png", a.read_bytes()), ("b", "b.png", b.read_bytes())],
                          [("images", "true")])
    browser.get(server)
    browser.find_element(By.ID, "photo-a").send_keys(str(a))
    browser.find_element(By.ID, "photo-b").send_keys(str(b))
    browser.find_element(By.ID, "compare").click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 60).until(lambda _: result.get_attribute("data-state") in ("done", "error"))
    assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "error").text
    decision = browser.find_element(By.ID, "decision").text
    assert decision == ("Same person" if expected["same"] else "Different people")
    assert browser.find_element(By.ID, "score").text == f"{expected['score']:.3f}"
    sizes = browser.execute_script(
        "return [...document.querySelectorAll('#faces img')].map(i => [i.alt, i.complete && i.naturalWidth]);"
    )
    # each face: its aligned crop, then a restoration only where the (briefly trained) model finds a mask
    shown = [alt for alt, _ in sizes]
    assert all(w == 32 for alt, w in sizes if alt != "restored, in the photo")
    assert all(0 < w <= 280 for alt, w in sizes if alt == "restored, in the photo")
    restorations = ["restored (mask removed)", "restored, in the photo"]
    assert shown == [alt for face in expected["faces"]
                     for alt in ["aligned face", *(restorations if face["mask_detected"] else [])]]
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#faces h3")]
    assert titles == ["First photo: first.png", "Second photo: second.png"]

    # a file that is not an image: the page shows the server's message
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    browser.find_element(By.ID, "photo-b").send_keys(str(notes))
    browser.find_element(By.ID, "compare").click()
    WebDriverWait(browser, 60).until(lambda _: result.get_attribute("data-state") in ("done", "error"))
    assert result.get_attribute("data-state") == "error"
    assert browser.find_element(By.ID, "error").text == "b (notes.jpg) is not an image (or not in a format Pillow reads)"


def test_oversized_upload_gets_its_413_answer_50_times_in_a_row(server):
    # the server reads (and drops) the rest of an oversized body before answering, so a client
    # that is still sending always gets the JSON answer, never a broken pipe
    data = np.random.default_rng(1).bytes(1_200_000)
    for _ in range(50):
        status, answer = request(server + "api/verify", [("a", "big.jpg", data), ("b", "b.png", b"x")])
        assert status == 413 and answer["error"]["code"] == "too_large"


def test_gallery_endpoints_without_a_gallery(server):
    status, answer = request(server + "api/people", body=None, method="GET")
    assert status == 409 and answer["error"]["code"] == "no_gallery" and "--gallery" in answer["error"]["message"]


def test_around_face_is_the_square_about_the_box_cut_at_the_edges_and_shrunk():
    from meer.web.app import around_face

    photo = np.zeros((300, 400, 3), np.uint8)
    photo[:, :, 0] = np.arange(400)[None] // 2  # red says the column, green the row
    photo[:, :, 1] = np.arange(300)[:, None] // 2
    crop = around_face(photo, (150, 100, 250, 180), margin=0.5, side=1000)
    assert crop.shape == (200, 200, 3)  # the longer side (100) doubled, centred on (200, 140)
    assert tuple(crop[0, 0, :2]) == (50, 20) and tuple(crop[-1, -1, :2]) == (149, 119)
    edge = around_face(photo, (0, 0, 60, 80), margin=0.5, side=1000)
    assert edge.shape == (120, 110, 3)  # the square from (-50, -40) is cut at the photo's corner
    small = around_face(photo, (150, 100, 250, 180), margin=0.5, side=64)
    assert small.shape == (64, 64, 3)
