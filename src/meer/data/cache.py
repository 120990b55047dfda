"""The aligned face cache that ``meer prepare`` writes and training / evaluation read.

Layout of a finished cache folder::

    images.u8       uint8 [N, S, S, 3] raw, C order (memory-mapped on open)
    landmarks.npy   float32 [N, 5, 2] landmarks in the aligned crop
    matrices.npy    float64 [N, 2, 3] similarity from the source image to the crop (caches
                    written before meer 0.2 lack it)
    labels.npy      int64 [N] identity index
    fallback.npy    bool [N] True where no face was found and the frame fallback was used
    masked.npy      bool [N] True for photos of a face wearing a real mask (meer prepare's
                    naming rule or list; caches written before meer 0.3 lack it: all False)
    names.json      identity names, ``names[label]``
    paths.json      [N] source-relative path of each row (``Name/Name_0001.jpg``)
    issame.npy      bool [P], only for a verification ``.bin`` source
    manifest.json   counts, failures with reasons, frame fallbacks, settings, versions,
                    times — written last

While a run is in progress the folder holds append-only logs instead (``images.u8``,
``landmarks.f32``, ``matrices.f64``, ``rows.jsonl``, ``failures.jsonl``) and ``progress.json``, which records
how many bytes of each log are committed. A chunk's data is flushed to disk before
``progress.json`` is replaced (atomically), so a killed run leaves at worst some uncommitted
bytes at the end of the logs; resuming truncates them and carries on from the last commit.
A folder without ``manifest.json`` is never read as a finished cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from meer.data.faceset import FaceSet
from meer.io import atomic_write, atomic_write_json

CACHE_FORMAT = "meer-face-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
IMAGES = "images.u8"
_LOGS = ("images.u8", "landmarks.f32", "matrices.f64", "rows.jsonl", "failures.jsonl")
_FINAL = ("landmarks.npy", "matrices.npy", "labels.npy", "fallback.npy", "masked.npy", "names.json", "paths.json",
          "issame.npy")
_ALL_FILES = frozenset((*_LOGS, *_FINAL, MANIFEST, PROGRESS))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _identity_order(name: str) -> tuple[int, int, str]:
    # numeric names (RecordIO labels) keep their numeric order; other names sort as text
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a file handle: np.save(str) would append ".npy"
            np.save(handle, array)

    atomic_write(path, write)


@dataclass
class Row:
    """One aligned face ready to be appended: uint8 [S, S, 3], float32 [5, 2], source -> crop [2, 3]."""

    key: str
    identity: str
    image: np.ndarray
    landmarks: np.ndarray
    fallback: bool
    matrix: np.ndarray
    masked: bool = False


class CacheWriter:
    """Appends aligned faces to a cache folder in committed chunks (see the module docstring).

    ``settings`` (source, size, detector, ...) must match those of the run being resumed;
    ``resume=False`` deletes a previous run's files (only the cache's own files) first.
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any], resume: bool = True) -> None:
        self.path = Path(path)
        self.settings = settings
        self.size = int(settings["size"])
        self.complete = False
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"output exists and is not a folder: {self.path}")
        if self.path.is_dir():
            self._check_existing(resume)
        if self.complete:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        progress_path = self.path / PROGRESS
        if progress_path.exists():
            self.state = json.loads(progress_path.read_text())
            # drop whatever a killed run appended after its last commit
            for name, length in self.state["bytes"].items():
                with open(self.path / name, "r+b") as handle:
                    handle.truncate(length)
        else:
            for name in _LOGS:
                (self.path / name).write_bytes(b"")
            self.state = {
                "settings": settings, "items_done": 0, "rows": 0, "seconds": 0.0,
                "started": _now(), "bytes": {name: 0 for name in _LOGS},
            }
            atomic_write_json(progress_path, self.state)

    def _check_existing(self, resume: bool) -> None:
        present = {p.name for p in self.path.iterdir() if not p.name.startswith(".")}
        if not present:
            return
        if not present & {MANIFEST, PROGRESS}:
            raise ValueError(f"output folder {self.path} is not empty and is not a meer cache; choose another")
        if not resume:
            for name in present & _ALL_FILES:
                (self.path / name).unlink()
            return
        recorded = self.path / (MANIFEST if MANIFEST in present else PROGRESS)
        previous = json.loads(recorded.read_text())["settings"]
        if previous != self.settings:
            changed = sorted(k for k in {*previous, *self.settings} if previous.get(k) != self.settings.get(k))
            raise ValueError(
                f"{self.path} was prepared with other settings ({', '.join(changed)} differ); "
                "pass --no-resume to start over or choose another output folder"
            )
        self.complete = MANIFEST in present

    @property
    def items_done(self) -> int:
        return 0 if self.complete else int(self.state["items_done"])

    def commit(self, items_done: int, rows: list[Row], failures: list[dict[str, str]], seconds: float) -> None:
        """Append ``rows`` and ``failures`` and mark the first ``items_done`` source items done."""
        blobs = {
            "images.u8": b"".join(np.ascontiguousarray(r.image, np.uint8).tobytes() for r in rows),
            "landmarks.f32": b"".join(np.asarray(r.landmarks, "<f4").tobytes() for r in rows),
            "matrices.f64": b"".join(np.asarray(r.matrix, "<f8").tobytes() for r in rows),
            "rows.jsonl": "".join(
                json.dumps({"key": r.key, "identity": r.identity, "fallback": r.fallback, "masked": r.masked}) + "\n"
                for r in rows
            ).encode(),
            "failures.jsonl": "".join(json.dumps(f) + "\n" for f in failures).encode(),
        }
        for name, blob in blobs.items():
            with open(self.path / name, "r+b") as handle:
                handle.seek(self.state["bytes"][name])
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            self.state["bytes"][name] += len(blob)
        self.state["items_done"] = items_done
        self.state["rows"] += len(rows)
        self.state["seconds"] += seconds
        atomic_write_json(self.path / PROGRESS, self.state)

    def finalize(self, extra: dict[str, Any] | None = None, issame: np.ndarray | None = None) -> dict[str, Any]:
        """Turn the logs into the finished layout; ``manifest.json`` goes last. Returns it."""
        if self.complete:
            return json.loads((self.path / MANIFEST).read_text())
        rows = [json.loads(line) for line in (self.path / "rows.jsonl").read_text().splitlines()]
        failures = [json.loads(line) for line in (self.path / "failures.jsonl").read_text().splitlines()]
        n, size = len(rows), self.size
        names = sorted({r["identity"] for r in rows}, key=_identity_order)
        label_of = {name: i for i, name in enumerate(names)}
        landmarks = np.fromfile(self.path / "landmarks.f32", dtype="<f4").reshape(n, 5, 2)
        _save_npy(self.path / "landmarks.npy", landmarks.astype(np.float32))
        matrices = np.fromfile(self.path / "matrices.f64", dtype="<f8").reshape(n, 2, 3)
        _save_npy(self.path / "matrices.npy", matrices.astype(np.float64))
        _save_npy(self.path / "labels.npy", np.array([label_of[r["identity"]] for r in rows], np.int64))
        _save_npy(self.path / "fallback.npy", np.array([r["fallback"] for r in rows], bool))
        _save_npy(self.path / "masked.npy", np.array([r.get("masked", False) for r in rows], bool))
        if issame is not None:
            _save_npy(self.path / "issame.npy", np.asarray(issame, bool))
        atomic_write_json(self.path / "names.json", names)
        atomic_write_json(self.path / "paths.json", [r["key"] for r in rows])
        fallback = sum(r["fallback"] for r in rows)
        from meer import __version__

        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "meer_version": __version__,
            "settings": self.settings,
            "shape": [n, size, size, 3],
            "counts": {
                "items": int(self.state["items_done"]),
                "aligned": n,
                "detected": n - fallback,
                "fallback": fallback,
                "masked": sum(r.get("masked", False) for r in rows),
                "failed": len(failures),
                "identities": len(names),
            },
            "failures": failures,
            "fallbacks": [r["key"] for r in rows if r["fallback"]],
            "started": self.state["started"],
            "finished": _now(),
            "seconds": round(self.state["seconds"], 1),
            **(extra or {}),
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        for name in ("landmarks.f32", "matrices.f64", "rows.jsonl", "failures.jsonl", PROGRESS):
            (self.path / name).unlink()
        self.complete = True
        return manifest


class FaceCache:
    """A finished cache opened for reading: a memory-mapped :class:`FaceSet` plus lookups.

    faces:    FaceSet whose images are a read-only memmap uint8 [N, S, S, 3]
    paths:    [N] source-relative path of each row
    fallback: bool [N], rows aligned by the frame fallback (no face found)
    masked:   bool [N], rows that are photos of real masks (also ``faces.masked``)
    issame:   bool [P] for a verification ``.bin`` source, else None
    matrices: float64 [N, 2, 3] source image -> crop, or None (caches from before meer 0.2)
    manifest: the parsed ``manifest.json``
    """

    def __init__(self, path: Path, manifest: dict, faces: FaceSet, paths: list[str],
                 fallback: np.ndarray, issame: np.ndarray | None, matrices: np.ndarray | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.faces = faces
        self.paths = paths
        self.fallback = fallback
        self.masked = faces.real_masked
        self.issame = issame
        self.matrices = matrices
        self.index = {key: row for row, key in enumerate(paths)}

    @classmethod
    def open(cls, path: str | os.PathLike) -> FaceCache:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no such cache folder: {path}")
        if not (path / MANIFEST).is_file():
            hint = " (an unfinished run: rerun meer prepare to resume it)" if (path / PROGRESS).exists() else ""
            raise ValueError(f"{path} is not a finished meer cache{hint}")
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: unsupported cache format {manifest.get('format')} v{manifest.get('version')}")
        shape = tuple(manifest["shape"])
        # np.memmap refuses zero-length files, and an empty cache is legitimate (all failed)
        images = np.memmap(path / IMAGES, np.uint8, "r", shape=shape) if shape[0] else np.zeros(shape, np.uint8)
        masked_file = path / "masked.npy"
        faces = FaceSet(
            images=images,
            landmarks=np.load(path / "landmarks.npy"),
            labels=np.load(path / "labels.npy"),
            names=json.loads((path / "names.json").read_text()),
            masked=np.load(masked_file) if masked_file.exists() else np.zeros(shape[0], bool),
        )
        issame = np.load(path / "issame.npy") if (path / "issame.npy").exists() else None
        paths = json.loads((path / "paths.json").read_text())
        matrices = np.load(path / "matrices.npy") if (path / "matrices.npy").exists() else None
        return cls(path, manifest, faces, paths, np.load(path / "fallback.npy"), issame, matrices)

    @property
    def template(self) -> str:
        """The alignment template of the crops: ``arcface`` or ``dlib``."""
        return self.manifest["settings"].get("template", "arcface")

    def __len__(self) -> int:
        return len(self.paths)

    def row(self, key: str) -> int:
        """The row of source-relative path ``key`` (``KeyError`` names the path and why)."""
        try:
            return self.index[key]
        except KeyError:
            failed = {f["path"]: f["reason"] for f in self.manifest["failures"]}
            why = f"it failed: {failed[key]}" if key in failed else "not in the source"
            raise KeyError(f"{key} is not in the cache at {self.path} ({why})") from None

    def rows(self, keys: list[str]) -> np.ndarray:
        """int64 [len(keys)] rows of ``keys``; -1 where a key is not in the cache."""
        return np.array([self.index.get(k, -1) for k in keys], dtype=np.int64)
