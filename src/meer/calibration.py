"""The verification threshold a checkpoint ships with, chosen by evaluation.

``meer eval`` writes ``calibration.json`` into the checkpoint folder; ``meer.load`` reads it
to decide same / different. The threshold is on the cosine similarity of unit embeddings.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from meer.io import atomic_write_json

FILENAME = "calibration.json"


@dataclass
class Calibration:
    threshold: float  # cosine similarity; scores >= threshold mean "same person"
    protocol: str  # what it was chosen on, e.g. "synthetic-val M-U, best accuracy"
    accuracy: float | None = None  # accuracy at this threshold on that protocol
    setting: str | None = None  # U-U / M-U / M-M


def write_calibration(checkpoint_dir: str | os.PathLike, calibration: Calibration) -> Path:
    return atomic_write_json(Path(checkpoint_dir) / FILENAME, asdict(calibration))


def read_calibration(checkpoint_dir: str | os.PathLike) -> Calibration | None:
    path = Path(checkpoint_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Calibration(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} is damaged: {err}") from err
