"""The service's HTTP behaviour the first serve tests left open: a route that does not exist is
a 404 (asserted, not assumed), the body cap holds when the client sends no honest
Content-Length, the per-request file limit, and the web page's script, run under Node with a
stand-in DOM so that it is checked on machines without Chromium.

The server runs in this process (Uvicorn in a thread) so that the mutation tests see which
handlers these tests reach; every check is on status codes and JSON error codes only."""

import http.client
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from .apikit import encode, face_model, served

LIMIT = 200_000  # request body, bytes
MAX_FILES = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from meer.web import Limits, create_app

    app = create_app(face_model(tmp_path_factory), Limits(max_upload_bytes=LIMIT, max_pixels=500_000, max_files=MAX_FILES))
    with served(app) as url:
        yield url


def answer(req):
    """``(status, JSON body)`` of a request, whatever the status."""
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def multipart(files):
    boundary = uuid.uuid4().hex
    parts = [
        (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
        for name, filename, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url, files):
    body, content_type = multipart(files)
    return answer(urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type}))


@pytest.mark.parametrize("path", ["api/nothing", "api/verify/extra", "index.html"])
def test_unknown_routes_answer_404(server, path):
    status, body = answer(server + path)
    assert status == 404 and body["error"]["code"] == "not_found"


def test_a_post_route_refuses_get_with_405(server):
    status, body = answer(server + "api/verify")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


def chunked_post(url, body: bytes, content_type: str, chunk: int = 16_384):
    """POST with ``Transfer-Encoding: chunked``: no Content-Length says how much is coming."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Type", content_type)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_body_cap_holds_without_an_honest_content_length(server):
    noise = np.random.default_rng(1).bytes(LIMIT + 50_000)
    body, content_type = multipart([("a", "a.png", noise), ("b", "b.png", b"x")])
    status, answer_ = chunked_post(server + "api/verify", body, content_type)
    assert status == 413 and answer_["error"]["code"] == "too_large"
    # the same route with a small body streamed the same way is read and parsed
    small, content_type = multipart([("a", "a.png", b"not an image"), ("b", "b.png", b"x")])
    status, answer_ = chunked_post(server + "api/verify", small, content_type)
    assert status == 415 and answer_["error"]["code"] == "not_an_image"


def test_embed_takes_at_most_max_files_images(server):
    blank = encode(np.full((40, 40, 3), 90, np.uint8))
    status, body = post(server + "api/embed", [("image", f"{i}.png", blank) for i in range(MAX_FILES)])
    assert status == 422 and body["error"]["code"] == "no_face"  # all read, none has a face
    status, body = post(server + "api/embed", [("image", f"{i}.png", blank) for i in range(MAX_FILES + 1)])
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = post(server + "api/verify", [("a", "a.png", blank), ("b", "b.png", blank), ("c", "c.png", blank)])
    assert status == 400 and body["error"]["code"] == "bad_request"


# ---------------------------------------------------------------------- the page's script

HARNESS = Path(__file__).with_name("page_harness.js")


def page_script(server) -> str:
    with urllib.request.urlopen(server, timeout=30) as response:
        page = response.read().decode()
    start = page.index("<script>") + len("<script>")
    return page[start : page.index("</script>", start)]


@pytest.fixture
def node():
    path = shutil.which("node")
    if path is None:
        pytest.skip("Node.js is not installed")
    return path


def test_page_script_parses(server, node, tmp_path):
    script = tmp_path / "page.js"
    script.write_text(page_script(server))
    subprocess.run([node, "--check", str(script)], check=True, capture_output=True, text=True)


def test_page_script_shows_decisions_and_errors(server, node, tmp_path):
    with urllib.request.urlopen(server + "api/health", timeout=30) as response:
        health = json.loads(response.read())
    face = {"field": "a", "filename": "a.png", "aligned": "data:image/png;base64,AA==", "num_faces": 1}
    scenario = {
        "health": health,
        "verify": [
            {"status": 200, "body": {"same": False, "score": 0.12345, "threshold": 0.3, "calibrated": True,
                                     "faces": [face, {**face, "field": "b", "num_faces": 2}]}},
            {"status": 200, "body": {"same": True, "score": 0.9, "threshold": 0.3, "calibrated": False,
                                     "faces": [face, face]}},
            {"status": 415, "body": {"error": {"code": "not_an_image", "message": "b (notes.jpg) is not an image",
                                               "field": "b"}}},
        ],
    }
    (tmp_path / "page.js").write_text(page_script(server))
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    out = subprocess.run([node, str(HARNESS), str(tmp_path / "page.js"), str(tmp_path / "scenario.json")],
                         check=True, capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout)
    assert health["model"]["checkpoint"] in report["model"]
    different, same, error = report["submits"]
    assert different["state"] == "done" and different["hidden"] is False
    assert different["decision"] == "Different people" and different["score"] == "0.123"
    assert different["threshold"] == "0.300" and different["calibration"] == "(calibrated)"
    assert different["faces"] == 2 and different["error"] == "" and different["compare_enabled"]
    assert same["decision"] == "Same person" and same["calibration"].startswith("(not calibrated")
    assert error["state"] == "error" and error["error"] == "b (notes.jpg) is not an image"
    assert error["compare_enabled"]
    assert report["posts"] == ["/api/verify"] * 3
