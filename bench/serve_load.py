"""Load test of ``meer serve``'s identification: concurrent clients against /api/identify.

    python bench/serve_load.py                         # 8 clients x 60 s, a briefly trained tiny model
    python bench/serve_load.py -m runs/tiny --clients 8 --seconds 60 --people 50

Starts ``meer serve --gallery`` on 127.0.0.1 (a free port; nothing else is contacted), enrols
``--people`` synthetic people over HTTP (with the token), then runs the clients, each posting
ordinary photos of enrolled people (a synthetic face pasted on a 320x400 canvas: detection and
alignment run; photos in which the detector finds no face are left out beforehand) as fast as the
answers come. Any answer but 200 is an error. Prints requests/s, p50/p99 latency, errors, and the
server's resident memory after a warm-up under the same load and at the end (its growth is what
a leak would show).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

TOKEN = "load-test-token"


def train_tiny(out: Path) -> Path:
    """The ``tiny`` config (48 px, IResNet-18 x0.25) trained for a few steps: the speed of a real
    small model; its accuracy does not matter here."""
    from meer.config import load_config
    from meer.data.synthetic import SyntheticFaces
    from meer.train.trainer import Trainer

    stages = ("stages=[{name: recognition, steps: 2, train: [backbone, decouple, centres], losses: [recognition]},"
              " {name: synthesis, steps: 2, train: [generator, discriminator], losses: [synthesis]}]")
    cfg = load_config("tiny", [f"train.out_dir={out}", "data.workers=0", "data.batch_size=16", stages])
    faces = SyntheticFaces(num_identities=8, images_per_identity=4, size=cfg.model.input_size, seed=3).generate()
    Trainer(cfg, faces, progress=False).fit(resume=False)
    return out


def photo(identity: int, sample: int) -> bytes:
    import cv2
    from PIL import Image

    from meer.data.synthetic import SyntheticFaces

    crop = SyntheticFaces(num_identities=identity + 1, images_per_identity=sample + 1, size=112, seed=0).render(identity, sample)[0]
    canvas = np.full((320, 400, 3), 200, np.uint8)
    canvas[80:240, 120:280] = cv2.resize(crop, (160, 160), interpolation=cv2.INTER_LINEAR)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def post(url: str, files, fields=(), headers=None, timeout=60) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'.encode() for n, v in fields]
    for name, filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(checkpoint: str, gallery: Path, threads: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "meer", "serve", "-m", checkpoint, "--port", "0", "--host", "127.0.0.1",
               "--gallery", str(gallery), "--threads", str(threads)]
    env = {**os.environ, "MEER_TOKEN": TOKEN}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if line.startswith("meer serve: http://"):
            url = line.split()[2]
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, url
    raise RuntimeError("meer serve did not start")


def hammer(url: str, probes: list[bytes], clients: int, seconds: float) -> tuple[list[float], list[str]]:
    """``clients`` threads posting the probes in turn for ``seconds``: (latencies in s, errors)."""
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        i = index
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status, answer = post(url + "api/identify", [("image", "probe.jpg", probes[i % len(probes)])])
                if status != 200:
                    errors.append(f"{status} {answer.get('error', {}).get('code')}")
            except OSError as err:
                errors.append(type(err).__name__)
            latencies.append(time.perf_counter() - start)
            i += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--checkpoint", help="run or checkpoint folder (default: train the tiny config briefly)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=15, help="seconds of load before memory is first measured")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads (default: 1)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="meer-load-"))
    checkpoint = args.checkpoint or str(train_tiny(work / "run"))
    process, url = start_server(checkpoint, work / "people.db", args.threads)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "api/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        enrolled = []
        for person in range(args.people):
            status, _ = post(url + "api/enroll", [("image", "1.jpg", photo(person, 0)), ("image", "2.jpg", photo(person, 1))],
                             [("name", f"person {person:03d}"), ("masked", "false")], {"Authorization": f"Bearer {TOKEN}"})
            if status == 200:  # the detector misses the odd synthetic face: that person is left out
                enrolled.append(person)
        # probes: other photos of enrolled people, kept if the detector finds their face
        probes = []
        for person in enrolled:
            data = photo(person, 2)
            if post(url + "api/identify", [("image", "probe.jpg", data)])[0] == 200:
                probes.append(data)
            if len(probes) == 32:
                break
        hammer(url, probes, args.clients, args.warmup)  # warm-up: every worker thread has run
        rss_start = rss_mb(process.pid)
        began = time.monotonic()
        latencies, errors = hammer(url, probes, args.clients, args.seconds)
        elapsed = time.monotonic() - began
        rss_end = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(15)
    ms = np.array(latencies) * 1000
    print(f"meer serve /api/identify: {args.clients} clients x {args.seconds:g} s after {args.warmup:g} s of warm-up, "
          f"{len(enrolled)} people enrolled (2 templates each), {len(probes)} probe photos, "
          f"server torch threads {args.threads}, checkpoint {Path(checkpoint).name}")
    print()
    print("| clients | seconds | requests | requests/s | p50 ms | p99 ms | errors | server RSS after warm-up MB | at end MB | growth MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.clients} | {elapsed:.1f} | {len(latencies)} | {len(latencies) / elapsed:.1f} | "
          f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 99):.0f} | {len(errors)} | {rss_start:.0f} | {rss_end:.0f} | "
          f"{rss_end - rss_start:+.0f} |")
    if errors:
        print("errors:", sorted(set(errors)))


if __name__ == "__main__":
    main()
