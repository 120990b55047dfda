"""What the tests of `meer.api`, the CLI and `meer serve` share: one tiny trained checkpoint per
test session, and ordinary "photos" built from synthetic faces pasted onto a larger canvas, so
that detection and alignment have real work to do."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from meer.config import load_config
from meer.data.synthetic import SyntheticFaces

from .conftest import TINY

_SESSION: dict[str, object] = {}

STAGES = (
    "stages=[{name: recognition, steps: 3, train: [backbone, decouple, centres], losses: [recognition]},"
    " {name: synthesis, steps: 3, train: [generator, discriminator], losses: [synthesis]}]"
)


def tiny_run(tmp_path_factory) -> Path:
    """A run folder with a 32 px MEER trained for a few steps; trained once per session."""
    if "run" not in _SESSION:
        from meer.train.trainer import Trainer

        out = tmp_path_factory.mktemp("api-model") / "run"
        cfg = load_config("tiny", [*TINY, f"train.out_dir={out}", STAGES])
        faces = SyntheticFaces(num_identities=8, images_per_identity=4, size=32, seed=3).generate()
        threads = torch.get_num_threads()
        # one thread: on a model this small, more threads only add synchronisation, and on a
        # machine whose cores are busy they make a step many times slower
        torch.set_num_threads(1)
        try:
            Trainer(cfg, faces, progress=False).fit(resume=False)
        finally:
            torch.set_num_threads(threads)
        _SESSION["run"] = out
    return _SESSION["run"]


def face_model(tmp_path_factory):
    """A `FaceModel` of :func:`tiny_run`, shared by the session (its detector loads once)."""
    if "model" not in _SESSION:
        import meer

        _SESSION["model"] = meer.load(tiny_run(tmp_path_factory))
    return _SESSION["model"]


_FACES = SyntheticFaces(num_identities=64, images_per_identity=8, size=112, seed=0)


def canvas(*faces: tuple[int, int, int, int, int], size=(320, 400)) -> np.ndarray:
    """A grey RGB photo ``size`` (h, w) with faces ``(identity, sample, x, y, side)`` pasted in."""
    photo = np.full((*size, 3), 200, np.uint8)
    for identity, sample, x, y, side in faces:
        crop = _FACES.render(identity, sample)[0]
        photo[y : y + side, x : x + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
    return photo


def photo(identity: int, sample: int) -> np.ndarray:
    """One face of 160 px in the middle of a 320x400 photo."""
    return canvas((identity, sample, 120, 80, 160))


def detectable(model, count: int) -> list[tuple[int, int]]:
    """``(identity, sample)`` of the first ``count`` faces the detector finds in :func:`photo`
    (found once per session: the detector misses the odd synthetic face)."""
    from meer.api import NoFaceError

    found = _SESSION.setdefault("detectable", [])
    candidates = [(i, s) for i in range(64) for s in range(2)]
    while len(found) < count:
        tried = set(found) | _SESSION.setdefault("missed", set())
        rest = [c for c in candidates if c not in tried]
        assert rest, "the detector finds too few synthetic faces"
        try:
            model.face(photo(*rest[0]))
            found.append(rest[0])
        except NoFaceError:
            _SESSION["missed"].add(rest[0])
    return found[:count]


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write(path: Path, pixels: np.ndarray) -> Path:
    """Save ``pixels`` to ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def truncated_jpeg(pixels: np.ndarray) -> bytes:
    """A JPEG cut short: the header reads, the pixel data does not."""
    data = encode(pixels, "JPEG")
    return data[: len(data) // 2]


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """Run a Starlette ``app`` with Uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        running.should_exit = True
        thread.join(10)
