"""A persistent gallery for open-set identification: who is this person, or nobody we know?

People are enrolled once (usually unmasked) and recognised later (often masked). The gallery is
an embedded SQLite database (standard library) with three tables:

* ``meta``      key/value: schema version, the model fingerprint and embedding size;
* ``people``    one row per person: unique name, created / updated times (UTC, ISO 8601);
* ``templates`` one row per enrolment photo: the unit embedding as a float32 BLOB, its size,
  the model fingerprint, whether the face was masked, the photo's name and its time.

Each photo keeps its own template (masked and unmasked photos are not averaged together). A
person's score against a probe is the **maximum** cosine over their templates, so a masked
probe can meet its nearest template, masked or not. The answer is the best person when that
score reaches the identification threshold, else "unknown" (``Identification.name is None``).

Every change is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL mode: a process
killed during an enrolment leaves the gallery as it was before, and two processes enrolling
the same name cannot both succeed. Deleting a person deletes all their templates, and their
bytes too (biometric data is not kept behind): ``secure_delete`` overwrites the freed pages and
the write-ahead log is emptied after the deletion. The SQL is plain (no SQLite-only types), so the same schema fits a
server database later; only :func:`_connect` is SQLite-specific.

Search is a matrix product over all templates for galleries up to :data:`FAISS_MIN_TEMPLATES`
and a FAISS index beyond (``pip install 'meer[faiss]'``; see BENCHMARKS.md for the measured
crossover).

    >>> import meer
    >>> from meer.gallery import open_gallery, enroll_photos, identify_photo
    >>> model = meer.load("runs/tiny")
    >>> gallery = open_gallery("people.db", model)
    >>> enroll_photos(gallery, model, "ann", ["ann1.jpg", "ann2.jpg"])
    >>> identify_photo(gallery, model, "probe.jpg")     # Identification(name='ann', score=0.71, ...)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from meer.api import Match
from meer.api.results import photo_list

if TYPE_CHECKING:
    from meer.api import Face, FaceModel, ImageInput

SCHEMA_VERSION = "1"
APPLICATION = "meer-gallery"

# From this many templates on, an exact FAISS index answered a probe faster than the matrix
# product (p50 about 2x at 100k on a shared 2-core CPU; measured with
# bench/gallery_scale.py, BENCHMARKS.md section "Gallery scale").
FAISS_MIN_TEMPLATES = 100_000

MAX_NAME_LENGTH = 100

DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

# Test hook: seconds to sleep between template inserts inside the enrolment transaction, so a
# test can kill the process in the middle of one.
_SLEEP_ENV = "MEER_TEST_ENROLL_SLEEP"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    dim INTEGER NOT NULL,
    model TEXT NOT NULL,
    masked BOOLEAN NOT NULL,
    source TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates (person_id);
"""


class GalleryError(ValueError):
    """The gallery cannot do what was asked (a message for the user says why)."""


class ModelMismatchError(GalleryError):
    """The gallery was enrolled with another model: its templates mean nothing to this one."""


class DuplicateNameError(GalleryError):
    """A person of that name is already enrolled."""


class UnknownPersonError(GalleryError):
    """No person of that name is enrolled."""


@dataclass
class Person:
    """One enrolled person: how many templates (photos) they have and how many were masked."""

    name: str
    templates: int
    masked: int
    created_at: str
    updated_at: str

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": self.templates, "masked": self.masked,
                "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass
class Identification:
    """The open-set answer for one probe.

    name:       the person identified, or None for "unknown" (nobody reaches the threshold)
    score:      the best person's score (max cosine over their templates); -1 if the gallery is empty
    threshold:  the identification threshold used
    calibrated: whether that threshold was calibrated for identification (see :func:`identification_threshold`)
    candidates: the ``top_k`` best people with their scores, best first
    """

    name: str | None
    score: float
    threshold: float
    calibrated: bool
    candidates: list[Match] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "identified": self.name, "score": self.score, "threshold": self.threshold,
            "calibrated": self.calibrated,
            "candidates": [{"name": m.name, "score": m.score} for m in self.candidates],
        }


def is_database(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a gallery database (by suffix) rather than a safetensors gallery."""
    return Path(path).suffix.lower() in DATABASE_SUFFIXES


def check_name(name: object) -> str:
    """A person's name as stored: a string of printable characters, stripped, 1-100 long."""
    if not isinstance(name, str):
        raise GalleryError(f"a name must be text, got {type(name).__name__}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise GalleryError(f"the name {name!r} is not valid UTF-8 text") from None
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise GalleryError("a name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"a name can have at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise GalleryError(f"the name {name!r} contains control characters")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit mode: transactions are opened explicitly by GalleryStore._write
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk: a deletion cannot come back
        conn.execute("PRAGMA secure_delete=ON")  # deleted templates are overwritten, not left in free pages
    except sqlite3.DatabaseError as err:
        conn.close()
        raise GalleryError(f"{path} is not a meer gallery database ({err})") from None
    return conn


class GalleryStore:
    """The gallery database at ``path``, for embeddings of one model.

    fingerprint: the model's :attr:`FaceModel.fingerprint`; a gallery made with another one is
                 refused (:class:`ModelMismatchError`). None opens any gallery for listing,
                 renaming and deleting only.
    dim:         the embedding size (checked like the fingerprint).
    create:      make the file if it does not exist (otherwise :class:`FileNotFoundError`).
    search:      ``"auto"`` (matrix product up to :data:`FAISS_MIN_TEMPLATES`, FAISS beyond
                 when installed), ``"matmul"`` or ``"faiss"``.

    One store may be shared by threads (calls are serialised); several processes may open the
    same file (SQLite locks it; each change is a transaction).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fingerprint: str | None = None,
        dim: int | None = None,
        create: bool = True,
        search: str = "auto",
    ) -> None:
        if search not in ("auto", "matmul", "faiss"):
            raise ValueError(f"search must be auto, matmul or faiss, got {search!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder, not a gallery database")
        if not self.path.exists() and not create:
            raise FileNotFoundError(f"{self.path} does not exist")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.search_kind = search
        self._lock = threading.RLock()
        self._index: _Index | None = None
        self._index_version: tuple[int, int] | None = None
        self._writes = 0
        self._conn = _connect(self.path)
        try:
            self._open(fingerprint, dim)
        except BaseException:
            self._conn.close()
            raise

    def _open(self, fingerprint: str | None, dim: int | None) -> None:
        try:
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise GalleryError(f"{self.path} is not a meer gallery database ({err})") from None
        if tables and "meta" not in tables:
            raise GalleryError(f"{self.path} is an SQLite database of something else, not a meer gallery")
        if not tables:
            if fingerprint is None or dim is None:
                raise GalleryError(f"{self.path} is empty: enrol someone with a model first")
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    conn.execute(statement)
                conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [
                    ("application", APPLICATION), ("schema_version", SCHEMA_VERSION),
                    ("model", fingerprint), ("dim", str(dim)), ("created_at", _now()),
                ])
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION:
            raise GalleryError(f"{self.path} is not a meer gallery database")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise GalleryError(f"{self.path} has gallery schema {meta.get('schema_version')}; "
                               f"this meer reads schema {SCHEMA_VERSION}")
        self.fingerprint, self.dim = meta["model"], int(meta["dim"])
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"{self.path} was enrolled with another model ({self.fingerprint}; this one is "
                f"{fingerprint}): enrol the people again with this model into a new gallery"
            )
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(f"{self.path} holds {self.dim}-d embeddings; this model makes {dim}-d ones")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self):
        """One transaction: everything in the block is committed together, or nothing is."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first insert
            except sqlite3.OperationalError as err:
                raise GalleryError(f"{self.path} is busy or read-only ({err})") from None
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._writes += 1

    # ------------------------------------------------------------------ people

    def people(self) -> list[Person]:
        """Everyone enrolled, by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.name, COUNT(t.id), COALESCE(SUM(t.masked), 0), p.created_at, p.updated_at "
                "FROM people p LEFT JOIN templates t ON t.person_id = p.id GROUP BY p.id ORDER BY p.name"
            ).fetchall()
        return [Person(name, count, int(masked), created, updated) for name, count, masked, created, updated in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM people").fetchone()[0]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM people WHERE name = ?", (check_name(name),)).fetchone() is not None

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        masked: Sequence[bool] | None = None,
        sources: Sequence[str | None] | None = None,
        add: bool = False,
    ) -> Person:
        """Store one template per row of ``embeddings`` [N, D] (unit-normalised here) for ``name``.

        masked:  whether each photo showed a masked face (default: none did)
        sources: each photo's name, kept for the record
        add:     add templates to a person already enrolled (a new name is enrolled as usual);
                 without it an existing name is a :class:`DuplicateNameError`
        """
        name = check_name(name)
        embeddings = self._check_embeddings(embeddings)
        count = len(embeddings)
        if count == 0:
            raise GalleryError(f"no photos to enrol for {name!r}")
        masked = [False] * count if masked is None else [bool(m) for m in masked]
        sources = [None] * count if sources is None else [None if s is None else str(s) for s in sources]
        if len(masked) != count or len(sources) != count:
            raise ValueError("masked and sources need one entry per embedding")
        pause = float(os.environ.get(_SLEEP_ENV, 0))
        now = _now()
        with self._write() as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is not None and not add:
                raise DuplicateNameError(f"{name!r} is already enrolled (add photos to them instead, or pick another name)")
            if row is None:
                person = conn.execute("INSERT INTO people (name, created_at, updated_at) VALUES (?, ?, ?)",
                                      (name, now, now)).lastrowid
            else:
                person = row[0]
                conn.execute("UPDATE people SET updated_at = ? WHERE id = ?", (now, person))
            for embedding, is_masked, source in zip(embeddings, masked, sources):
                conn.execute(
                    "INSERT INTO templates (person_id, embedding, dim, model, masked, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (person, embedding.tobytes(), self.dim, self.fingerprint, is_masked, source, now),
                )
                if pause:
                    time.sleep(pause)
        return next(p for p in self.people() if p.name == name)

    def rename(self, old: str, new: str) -> None:
        old, new = check_name(old), check_name(new)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM people WHERE name = ?", (old,)).fetchone() is None:
                raise UnknownPersonError(f"nobody called {old!r} is enrolled")
            if conn.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone() is not None:
                raise DuplicateNameError(f"{new!r} is already enrolled")
            conn.execute("UPDATE people SET name = ?, updated_at = ? WHERE name = ?", (new, _now(), old))

    def delete(self, name: str) -> int:
        """Remove a person and every template of theirs; returns how many templates went."""
        name = check_name(name)
        with self._write() as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownPersonError(f"nobody called {name!r} is enrolled")
            removed = conn.execute("DELETE FROM templates WHERE person_id = ?", row).rowcount
            conn.execute("DELETE FROM people WHERE id = ?", row)
        with self._lock:
            # the write-ahead log still holds earlier copies of the deleted pages: copy the log
            # into the database and empty it (done unless another connection is reading just now)
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def _check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim == 1:
            embeddings = embeddings[None]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or not np.issubdtype(embeddings.dtype, np.number):
            raise ValueError(f"embeddings must be numbers [N, {self.dim}], got {embeddings.dtype} {embeddings.shape}")
        embeddings = embeddings.astype(np.float32)
        if not np.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or infinity")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise ValueError("an embedding is all zeros")
        return np.ascontiguousarray(embeddings / norms, np.float32)

    # ------------------------------------------------------------------ search

    def _current_index(self) -> _Index:
        """The in-memory search index, rebuilt when this or another process changed the gallery."""
        with self._lock:
            version = (self._writes, self._conn.execute("PRAGMA data_version").fetchone()[0])
            if self._index is None or version != self._index_version:
                rows = self._conn.execute(
                    "SELECT p.name, t.embedding FROM templates t JOIN people p ON p.id = t.person_id "
                    "ORDER BY p.name, t.id"
                ).fetchall()
                names = [name for name, _ in rows]
                vectors = np.frombuffer(b"".join(blob for _, blob in rows), np.float32).reshape(len(rows), self.dim)
                self._index = _Index(names, vectors, self.search_kind)
                self._index_version = version
            return self._index

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[Match]]:
        """The ``top_k`` people nearest each probe ``embeddings`` [Q, D], best first (score: max
        cosine over the person's templates)."""
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        return self._current_index().search(self._check_embeddings(embeddings), top_k)

    def identify(self, embedding: np.ndarray, threshold: float, top_k: int = 5, calibrated: bool = False) -> Identification:
        """Open-set answer for one probe embedding [D]: the best person if their score reaches
        ``threshold``, else unknown."""
        candidates = self.search(embedding, top_k)[0]
        if not candidates:
            return Identification(None, -1.0, threshold, calibrated, [])
        best = candidates[0]
        return Identification(best.name if best.score >= threshold else None, best.score, threshold, calibrated, candidates)


class _Index:
    """Templates grouped by person (contiguous rows), searchable by matrix product or FAISS."""

    def __init__(self, names: list[str], vectors: np.ndarray, kind: str = "auto") -> None:
        self.vectors = vectors  # float32 [T, D], rows of one person next to each other
        self.starts = np.array([i for i, name in enumerate(names) if i == 0 or name != names[i - 1]], np.int64)
        self.people = [names[i] for i in self.starts]
        sizes = np.diff(np.append(self.starts, len(names)))
        self.owner = np.repeat(np.arange(len(self.starts)), sizes)  # template row -> person
        self.most_templates = int(sizes.max()) if len(sizes) else 0
        if kind == "auto":
            kind = "faiss" if len(vectors) >= FAISS_MIN_TEMPLATES and faiss_available() else "matmul"
        self.kind = kind
        self.faiss = build_faiss_index(vectors) if kind == "faiss" and len(vectors) else None

    def search(self, probes: np.ndarray, top_k: int) -> list[list[Match]]:
        if not self.people:
            return [[] for _ in probes]
        if self.faiss is None:
            return [self._best_people(self.vectors @ probe, top_k) for probe in probes]
        # the top templates hold the top people: enough of them for top_k distinct people
        wanted = min(len(self.vectors), top_k * self.most_templates)
        scores, rows = self.faiss.search(probes, wanted)
        out = []
        for row_scores, row_ids in zip(scores, rows):
            best: dict[int, float] = {}
            for score, row in zip(row_scores, row_ids):
                if row >= 0:
                    best.setdefault(int(self.owner[row]), float(score))
            ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:top_k]
            out.append([Match(self.people[p], s) for p, s in ranked])
        return out

    def _best_people(self, scores: np.ndarray, top_k: int) -> list[Match]:
        per_person = np.maximum.reduceat(scores, self.starts)
        k = min(top_k, len(per_person))
        top = np.argpartition(-per_person, k - 1)[:k]
        top = top[np.lexsort((top, -per_person[top]))]
        return [Match(self.people[i], float(per_person[i])) for i in top]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_faiss_index(vectors: np.ndarray):
    """An exact inner-product FAISS index over unit ``vectors`` [T, D] (cosine similarity)."""
    try:
        import faiss
    except ImportError:
        raise GalleryError("FAISS search needs its extra: pip install 'meer[faiss]'") from None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


# ---------------------------------------------------------------------- with a model


def open_gallery(path: str | os.PathLike, model: FaceModel, create: bool = True, search: str = "auto") -> GalleryStore:
    """The gallery at ``path`` for ``model`` (refused if another model enrolled it)."""
    return GalleryStore(path, model.fingerprint, model.embedding_dim, create=create, search=search)


def identification_threshold(model: FaceModel, probe_masked: bool | None = None) -> tuple[float, bool]:
    """``(threshold, calibrated)`` for open-set identification: the checkpoint's calibrated
    identification threshold (``meer.calibration``), else its verification threshold, flagged
    not calibrated for identification.

    The verification threshold follows the probe's mask verdict when the checkpoint stores one
    per setting: enrolment photos are taken to be unmasked (the usual case), so a masked probe
    uses the M-U threshold and an unmasked one U-U; ``probe_masked=None`` (unknown, or a model
    without a mask classifier) uses M-U.
    """
    calibration = model.calibration
    if calibration is not None and calibration.identification_threshold is not None:
        return calibration.identification_threshold, True
    setting = "U-U" if probe_masked is False else "M-U"
    return model.threshold_for(setting), False


def enroll_photos(
    gallery: GalleryStore,
    model: FaceModel,
    name: str,
    photos: ImageInput | Sequence[ImageInput],
    masked: bool | Sequence[bool] | None = None,
    aligned: bool = False,
    add: bool = False,
    max_pixels: int | None = None,
    sources: Sequence[str | None] | None = None,
) -> Person:
    """Enrol ``name`` from photos (or one photo): one template per photo, all stored in one
    transaction.

    masked: True/False for all photos, one flag per photo, or None to take the model's own mask
            verdict (its mask classifier; photos count as unmasked if the model has none).
    Any photo without a usable face stops the enrolment before anything is written.
    """
    name = check_name(name)
    photos = photo_list(photos)
    if not photos:
        raise GalleryError(f"no photos to enrol for {name!r}")
    faces = [model.face(photo, aligned, max_pixels=max_pixels) for photo in photos]
    if masked is None:  # a verdict of None (a model without a mask classifier) counts as unmasked
        embeddings, masked = model.embed_with_verdicts(faces)
    else:
        embeddings = model.embed(faces)
        if isinstance(masked, bool):
            masked = [masked] * len(faces)
    if sources is None:
        sources = [face.source for face in faces]
    return gallery.enroll(name, embeddings, masked, sources, add=add)


def identify_photo(
    gallery: GalleryStore, model: FaceModel, probe: ImageInput, top_k: int = 5, aligned: bool = False,
    max_pixels: int | None = None,
) -> Identification:
    """Who is on ``probe``: a person of the gallery or unknown, with the top candidates (the
    threshold follows the probe's mask verdict, see :func:`identification_threshold`)."""
    return identify_face(gallery, model, model.face(probe, aligned, max_pixels=max_pixels), top_k)[0]


def identify_face(
    gallery: GalleryStore, model: FaceModel, face: Face, top_k: int = 5
) -> tuple[Identification, bool | None]:
    """:func:`identify_photo` on a face (from :meth:`FaceModel.face`), and the probe's mask
    verdict that picked the threshold (None for a model without a mask classifier)."""
    (embedding,), (masked,) = model.embed_with_verdicts(face)
    threshold, calibrated = identification_threshold(model, masked)
    return gallery.identify(embedding, threshold, top_k, calibrated), masked
