"""Files of embeddings: a :class:`Gallery` (one template per enrolled person) and the plain
embeddings file of ``meer embed``, both safetensors with JSON in the header (no pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from meer.io import atomic_write

GALLERY_FORMAT = "meer-gallery-1"


@dataclass
class Gallery:
    """Enrolled people: one template embedding each (the mean of their photos' unit embeddings,
    normalised again).

    names:      person names, ``names[i]`` owns ``embeddings[i]``
    embeddings: float32 [K, D], unit norm
    counts:     photos that went into each template
    model:      fingerprint of the checkpoint that made it (a gallery only works with its model)
    skipped:    ``(input, reason)`` of photos left out during enrolment; not saved
    """

    names: list[str]
    embeddings: np.ndarray = field(repr=False)
    counts: list[int]
    model: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.embeddings) or len(self.counts) != len(self.names):
            raise ValueError("a gallery needs one name, one embedding and one count per person")
        if len(set(self.names)) != len(self.names):
            raise ValueError("gallery names must be unique")

    def __len__(self) -> int:
        return len(self.names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file: the ``embeddings`` tensor, and the names, counts and model
        fingerprint as JSON in its header metadata (no pickle anywhere)."""
        metadata = {
            "format": GALLERY_FORMAT,
            "names": json.dumps(self.names),
            "counts": json.dumps(self.counts),
            "model": self.model,
        }
        return save_embeddings(path, self.embeddings, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        """Read a gallery written by :meth:`save`."""
        embeddings, metadata = load_embeddings(path)
        if metadata.get("format") != GALLERY_FORMAT:
            raise ValueError(f"{path} is not a meer gallery (format {metadata.get('format')!r})")
        try:
            names, counts = json.loads(metadata["names"]), json.loads(metadata["counts"])
            return cls(names, embeddings, counts, metadata["model"])
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: damaged gallery metadata ({err})") from None


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, metadata: dict[str, str]) -> Path:
    """Write ``embeddings`` [N, D] float32 with string ``metadata`` as one safetensors file. An
    existing file is replaced only if it is one of these (a gallery or embeddings file): a photo
    named by mistake is not overwritten."""
    if Path(path).is_file():
        try:
            load_embeddings(path)
        except ValueError:
            raise ValueError(f"{path} exists and is not a meer embeddings or gallery file: not overwritten") from None
    tensors = {"embeddings": np.ascontiguousarray(embeddings, np.float32)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Read a file written by :func:`save_embeddings`: ``(embeddings [N, D], metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.get_tensor("embeddings"), dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types on foreign files
        raise ValueError(f"{path} is not a meer embeddings file ({err})") from None
