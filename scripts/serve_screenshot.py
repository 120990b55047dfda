"""How docs/images/serve.png is made: the web page of ``meer serve`` comparing two photos, one of
them wearing one of meer's masks, in headless Chromium (``scripts/install-browser.sh``).

    python scripts/serve_screenshot.py ../shared/data/lfw/Serena_Williams/Serena_Williams_0001.jpg \\
        ../shared/data/lfw/Serena_Williams/Serena_Williams_0003.jpg --mask surgical -o docs/images/serve.png

The mask is drawn on the first photo at MTCNN's landmarks (``--seed`` picks its look); the page then
detects, aligns and compares the two as it would a user's upload. With ``--enroll NAME=PHOTO``
(repeatable) the page instead enrols those people, unmasked, into a fresh gallery and identifies
the masked first photo (how docs/images/serve_identify.png is made; the second photo is then
enrolled as the first photo's person, named by its folder):

    python scripts/serve_screenshot.py ../shared/data/lfw/Serena_Williams/Serena_Williams_0001.jpg \
        ../shared/data/lfw/Serena_Williams/Serena_Williams_0003.jpg \
        --enroll "Venus Williams=../shared/data/lfw/Venus_Williams/Venus_Williams_0001.jpg" \
        --enroll "Colin Powell=../shared/data/lfw/Colin_Powell/Colin_Powell_0001.jpg" -o docs/images/serve_identify.png

Needs the dev extra (selenium, uvicorn) and the shipped model or ``-m``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="the photo that gets the mask")
    parser.add_argument("second", help="the photo to compare it with, as it is")
    parser.add_argument("--mask", default="surgical", help="the mask kind drawn on the first photo (surgical, n95, cloth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-m", "--model", default=None, help="checkpoint, run or release folder (default: shipped)")
    parser.add_argument("--enroll", action="append", default=[], metavar="NAME=PHOTO",
                        help="enrol these people and identify the masked first photo instead of comparing")
    parser.add_argument("-o", "--output", default="docs/images/serve.png")
    args = parser.parse_args()
    people = [spec.partition("=")[::2] for spec in args.enroll]
    if any(not name or not photo for name, photo in people):
        raise SystemExit("error: --enroll takes NAME=PHOTO")
    browser_binary = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and Path(p).exists()),
                          None)
    if browser_binary is None or shutil.which("chromedriver") is None:
        raise SystemExit("error: headless Chromium not installed: run scripts/install-browser.sh")

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    import meer
    from meer.data.detect import create_detector, pick_main_face
    from meer.data.masks import MaskRenderer
    from meer.data.photos import load_image
    from meer.web import create_app

    first = load_image(args.first)
    face = pick_main_face(create_detector("mtcnn").detect(first), first.shape)
    if face is None:
        raise SystemExit(f"error: no face found in {args.first}")
    try:
        renderer = MaskRenderer(types=(args.mask,), nose_out_prob=0, chin_out_prob=0)
    except ValueError as err:
        raise SystemExit(f"error: --mask: {err}") from None
    masked = renderer(first, face.landmarks5, np.random.default_rng(args.seed)).masked
    work = Path(tempfile.mkdtemp())
    upload = work / "masked.jpg"
    Image.fromarray(masked).save(upload, quality=95)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    model = meer.load(args.model)
    gallery, token = None, None
    if people:
        from meer.gallery import open_gallery

        gallery, token = open_gallery(work / "people.db", model), "screenshot"
    server = uvicorn.Server(uvicorn.Config(create_app(model, gallery=gallery, token=token), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = browser_binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", f"--user-data-dir={work / 'profile'}", "--window-size=1000,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        browser.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        if people:
            said = identify(browser, upload, [(Path(args.second).parent.name.replace("_", " "), args.second), *people],
                            token)
        else:
            said = compare(browser, upload, args.second)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1000, height + 140)  # the window's frame is counted in its size
        browser.save_screenshot(args.output)
        print(f"{said}; written to {args.output}")
    finally:
        browser.quit()
        server.should_exit = True
        shutil.rmtree(work, ignore_errors=True)


def compare(browser, upload: Path, second: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "photo-a").send_keys(str(upload))
    browser.find_element(By.ID, "photo-b").send_keys(str(Path(second).resolve()))
    browser.find_element(By.ID, "compare").click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 120).until(lambda _: result.get_attribute("data-state") in ("done", "error"))
    if result.get_attribute("data-state") != "done":
        raise SystemExit(f"error: the page says {browser.find_element(By.ID, 'error').text}")
    return f"{browser.find_element(By.ID, 'decision').text}, score {browser.find_element(By.ID, 'score').text}"


def identify(browser, upload: Path, people: list[tuple[str, str]], token: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    WebDriverWait(browser, 30).until(lambda _: browser.find_element(By.ID, "gallery").is_displayed())
    browser.find_element(By.ID, "token").send_keys(token)
    note = browser.find_element(By.ID, "enroll-result")
    for name, photo in people:
        browser.find_element(By.ID, "enroll-name").clear()
        browser.find_element(By.ID, "enroll-name").send_keys(name)
        browser.find_element(By.ID, "enroll-photos").send_keys(str(Path(photo).resolve()))
        Select(browser.find_element(By.ID, "enroll-masked")).select_by_value("false")
        browser.find_element(By.ID, "enroll").click()
        # the note says "Enrolled NAME: ..." when done (it may still show the one before)
        WebDriverWait(browser, 120).until(lambda _, name=name: note.get_attribute("data-state") == "error"
                                          or (note.get_attribute("data-state") == "done" and name in note.text))
        if note.get_attribute("data-state") != "done":
            raise SystemExit(f"error: enrolling {name}: the page says {note.text}")
    browser.find_element(By.ID, "identify-photo").send_keys(str(upload))
    browser.find_element(By.ID, "identify").click()
    box = browser.find_element(By.ID, "identify-result")
    WebDriverWait(browser, 120).until(lambda _: box.get_attribute("data-state") in ("done", "error"))
    return f"identified: {browser.find_element(By.ID, 'identity').text} ({browser.find_element(By.ID, 'identify-note').text})"


if __name__ == "__main__":
    main()
