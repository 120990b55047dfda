"""``prepare_dataset``: any supported dataset in, a compact aligned cache out.

Photos (an image folder) are decoded, the main face is detected and similarity-aligned onto
the template by :mod:`meer.data.photos`, the road the API takes with a user's photo. Already
aligned sets (RecordIO, verification ``.bin``) are only decoded and resized. Results go to a
:class:`meer.data.cache.CacheWriter` chunk by chunk, so an interrupted run resumes.

Policies:

* several faces: :func:`meer.data.detect.pick_main_face` (largest, unless a face much nearer
  the centre is nearly as large);
* no face: ``no_face="skip"`` (default) counts the photo as a failure with its reason;
  ``no_face="frame"`` (for tight face crops such as RMFRD's, where masks defeat detectors)
  takes the frame as the face box (:func:`meer.data.align.frame_crop`) and keeps the crop,
  flagged in ``fallback.npy`` and counted in the manifest;
* unreadable files (corrupt image, a ``.txt`` among the photos): failures with reasons.

Real masks: each row records whether the photo shows a face wearing a real mask
(``masked.npy`` in the cache), so that training can treat it as a masked face with no clean
twin. The naming rule: a photo whose *file name* matches ``masked_*`` (case-insensitive, the
RMFRD layout ``<person>/masked_01.jpg`` next to ``<person>/unmasked_01.jpg``) is masked. Override
it with another pattern (``masked="*_mask.*"``, ``""`` for none) or with a list of the masked
photos' source-relative keys (``masked_list``, one per line), which replaces the rule.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from meer.data.align import frame_crop
from meer.data.cache import CacheWriter, Row
from meer.data.detect import BACKENDS, EXTRAS, available_detectors
from meer.data.faceset import TEMPLATES, arcface_template
from meer.data.formats import IMAGE_EXTENSIONS, open_source
from meer.data.photos import ImageError, ImageTooLargeError, align_photo, load_image, resize_aligned

log = logging.getLogger(__name__)

NO_FACE_POLICIES = ("skip", "frame")
MASKED_PATTERN = "masked_*"


def masked_flags(keys: list[str], pattern: str = MASKED_PATTERN, listed: str | os.PathLike | None = None
                 ) -> tuple[np.ndarray, str]:
    """bool [N]: which source keys are photos of real masks, and the rule as recorded in the cache.

    ``listed`` (a text file of keys, one per line) replaces the file-name ``pattern``; a listed
    key that is not in the source is an error (a typo would otherwise train a masked face as clean).
    """
    if listed is not None:
        text = Path(listed).read_text(encoding="utf-8")
        wanted = {line.strip() for line in text.splitlines() if line.strip()}
        missing = sorted(wanted - set(keys))
        if missing:
            raise ValueError(f"{listed}: {len(missing)} listed photo(s) not in the source, e.g. {missing[0]!r}")
        rule = f"list sha1:{hashlib.sha1(text.encode()).hexdigest()[:12]}"
        return np.array([k in wanted for k in keys], bool), rule
    pattern = pattern.lower()
    flags = [bool(pattern) and fnmatch.fnmatchcase(Path(k).name.lower(), pattern) for k in keys]
    return np.array(flags, bool), f"name {pattern}" if pattern else "none"


@dataclass
class PrepareReport:
    """What a preparation run produced (the same counts as the cache's manifest)."""

    output: Path
    items: int
    aligned: int
    detected: int
    fallback: int
    failed: int
    identities: int
    seconds: float
    resumed_at: int
    failures: list[dict[str, str]] = field(default_factory=list)
    masked: int = 0
    pre_aligned: bool = False  # a RecordIO or .bin source: crops resized, nothing detected

    def summary(self) -> str:
        resumed = f", resumed at item {self.resumed_at}" if self.resumed_at else ""
        how = "pre-aligned source, resized" if self.pre_aligned else (
            f"{self.detected} detected, {self.fallback} frame fallback")
        return (
            f"{self.output}: {self.aligned}/{self.items} aligned ({how}), {self.failed} failed, "
            f"{self.identities} identities, {self.masked} flagged masked, {self.seconds:.0f}s{resumed}"
        )


# ------------------------------------------------------------------ per-image work (in workers)

_worker: dict[str, Any] = {}


def _set_threads(torch_threads: int, cv2_threads: int) -> tuple[int, int]:
    """Set torch's and OpenCV's thread counts; returns the previous ones."""
    import torch

    previous = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)
    return previous


@contextmanager
def _single_threaded() -> Iterator[None]:
    """One torch / OpenCV thread inside, the caller's settings restored after.

    The detector's networks are tiny: extra threads mostly spin and, on a busy machine, cost
    ~10x more CPU than they save. Parallelism comes from worker processes instead.
    """
    previous = _set_threads(1, 1)
    try:
        yield
    finally:
        _set_threads(*previous)


def _init_worker(detector: str | None, size: int, no_face: str, aligned: bool, pooled: bool,
                 template: str = "arcface") -> None:
    if pooled:  # a worker process lives only for this run
        _set_threads(1, 1)
    if detector is not None:
        from meer.data import detect

        _worker["detector"] = detect.create_detector(detector)
    _worker.update(size=size, no_face=no_face, aligned=aligned, template=template)


def _process(data: bytes) -> tuple[str, Any]:
    """Encoded image -> ("ok", (image [S, S, 3], landmarks [5, 2], fallback, matrix [2, 3])) or
    ("fail", reason). Photos take the API's road (:mod:`meer.data.photos`)."""
    size = _worker["size"]
    try:
        image = load_image(data, name="the image")
    except ImageTooLargeError as err:
        return "fail", str(err)
    except ImageError:
        return "fail", "cannot decode image (corrupt or not an image)"
    if _worker["aligned"]:
        # already on the 112 template: only the scale changes
        height, width = image.shape[:2]
        matrix = np.array([[size / width, 0.0, 0.0], [0.0, size / height, 0.0]])
        return "ok", (resize_aligned(image, size), arcface_template(size), False, matrix)
    template = _worker["template"]
    face = align_photo(image, _worker["detector"], size, template)
    if face is not None:
        return "ok", (face.crop, face.landmarks, False, face.matrix)
    if _worker["no_face"] == "frame":
        crop, matrix, landmarks = frame_crop(image, size, template)
        return "ok", (crop, landmarks, True, matrix)
    return "fail", "no face detected"


# ------------------------------------------------------------------ driver


def _resolve_detector(name: str) -> str:
    if "," in name:  # a fallback chain: each of its detectors must be installed
        return ",".join(_resolve_detector(part.strip()) for part in name.split(","))
    installed = available_detectors()
    if name == "auto":
        if not installed:
            raise ValueError(
                "photos need a face detector and none is installed: pip install 'meer[detect]'"
            )
        return ",".join(installed)  # a fallback chain (meer.data.detect.create_detector)
    if name not in BACKENDS:
        raise ValueError(f"unknown detector {name!r}; choose from auto, {', '.join(BACKENDS)}")
    if name not in installed:
        raise ValueError(f"detector {name!r} is not installed: pip install 'meer[{EXTRAS.get(name, name)}]'")
    return name


def prepare_dataset(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    size: int = 112,
    template: str = "arcface",
    detector: str = "auto",
    no_face: str = "skip",
    resume: bool = True,
    progress: bool = True,
    workers: int | None = None,
    chunk_size: int = 512,
    masked: str = MASKED_PATTERN,
    masked_list: str | os.PathLike | None = None,
) -> PrepareReport:
    """Align every face of ``source`` (image folder, RecordIO or ``.bin``) into a cache at ``output``.

    size:       side of the aligned crops (the template is scaled to it)
    template:   ``arcface`` (the 112 ArcFace 5-point template) or ``dlib`` (dlib's 150 face-chip
                framing, for the dlib teacher and peer; see :mod:`meer.data.faceset`)
    detector:   ``auto``, ``mtcnn``, ``mediapipe``, ``yunet`` or a comma-separated fallback chain
                (ignored for already aligned sources)
    no_face:    ``skip`` or ``frame`` (see the module docstring)
    resume:     continue a run interrupted in ``output``; False starts over
    workers:    processes for decoding/detection; default: all CPU cores, 1 = in this process
    chunk_size: source items per commit (what a killed run may have to redo)
    masked:     file-name pattern of photos of real masks (see the module docstring; "" for none)
    masked_list: a text file listing the masked photos' keys instead of the pattern

    Bad inputs (missing or empty folder, unknown format, no detector) raise before anything
    is written. Returns a :class:`PrepareReport`; the cache opens with ``FaceCache.open``.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if no_face not in NO_FACE_POLICIES:
        raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
    data = open_source(source)
    detector_name = None if data.aligned else _resolve_detector(detector)
    flags, rule = masked_flags(data.keys, masked, masked_list)
    settings = {
        "source": str(Path(source).resolve()),
        "source_kind": data.kind,
        "size": size,
        "detector": detector_name or "none (pre-aligned source)",
        "no_face": no_face,
        "items": len(data),
        "masked": rule,
    }
    if template != "arcface":  # absent = arcface, so caches from before templates still resume
        settings["template"] = template
    writer = CacheWriter(output, settings, resume=resume)
    start_item = writer.items_done
    if not writer.complete:
        if start_item:
            log.info("resuming %s at item %d of %d", output, start_item, len(data))
        _run(data, flags, writer, start_item, detector_name, size, no_face, progress, workers, chunk_size, template)
    manifest = writer.finalize(issame=data.issame)
    counts = manifest["counts"]
    return PrepareReport(
        output=Path(output), items=counts["items"], aligned=counts["aligned"],
        detected=counts["detected"], fallback=counts["fallback"], failed=counts["failed"],
        identities=counts["identities"], seconds=manifest["seconds"], resumed_at=start_item,
        failures=manifest["failures"], masked=counts.get("masked", 0), pre_aligned=data.aligned,
    )


def _run(data, masked: np.ndarray, writer: CacheWriter, start: int, detector: str | None, size: int, no_face: str,
         progress: bool, workers: int | None, chunk_size: int, template: str = "arcface") -> None:
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    init_args = (detector, size, no_face, data.aligned)
    template_arg = (template,)
    bar = tqdm(total=len(data), initial=start, unit="img", desc="prepare", disable=not progress)
    pool = None
    try:
        with _single_threaded():
            if workers > 1:
                # spawn, not fork: a forked torch can deadlock on locks held by the parent's threads
                pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (*init_args, True, *template_arg))
            else:
                _init_worker(*init_args, False, *template_arg)
            _run_chunks(data, masked, writer, start, pool, bar, chunk_size)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def _run_chunks(data, masked: np.ndarray, writer: CacheWriter, start: int, pool, bar: tqdm, chunk_size: int) -> None:
    """Process ``data`` from item ``start`` on, committing every ``chunk_size`` items."""
    failed = 0
    for chunk_start in range(start, len(data), chunk_size):
        tick = time.perf_counter()
        indices = range(chunk_start, min(chunk_start + chunk_size, len(data)))
        failures: list[tuple[int, str]] = []
        todo: list[tuple[int, bytes]] = []
        for i in indices:
            key = data.keys[i]
            if data.kind == "folder" and Path(key).suffix.lower() not in IMAGE_EXTENSIONS:
                failures.append((i, f"not an image file ({Path(key).suffix or 'no extension'})"))
                continue
            try:
                todo.append((i, data.read(i)))
            except OSError as err:
                failures.append((i, f"cannot read file: {err.strerror or err}"))
        results = pool.imap(_process, [blob for _, blob in todo], chunksize=4) if pool else map(
            _process, (blob for _, blob in todo)
        )
        rows: list[Row] = []
        for (i, _), (status, value) in zip(todo, results):
            if status == "ok":
                image, landmarks, fallback, matrix = value
                rows.append(Row(data.keys[i], data.identities[i], image, landmarks, fallback, matrix, bool(masked[i])))
            else:
                failures.append((i, value))
            bar.update(1)
        bar.update(len(indices) - len(todo))
        failed += len(failures)
        # failures in source order, whichever stage found them
        reasons = [{"path": data.keys[i], "reason": why} for i, why in sorted(failures)]
        writer.commit(indices.stop, rows, reasons, time.perf_counter() - tick)
        bar.set_postfix(failed=failed)
