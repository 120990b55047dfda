"""The thresholds a checkpoint ships with, chosen by evaluation.

``meer eval`` writes ``calibration.json`` into the checkpoint folder; ``meer.load`` reads it
to decide same / different. The thresholds are on the cosine similarity of unit embeddings.

The best threshold moves when one or both faces wear a mask, so a calibration may hold one
threshold per setting (``U-U``, ``M-U``, ``M-M``; ``meer eval --calibrate all``) and
:meth:`Calibration.threshold_for` picks the one that matches the mask verdicts of a pair. A file
with a single threshold (the older format, or ``--calibrate M-U``) means that threshold for
every setting.

Open-set identification (``meer.gallery``) has its own threshold: a person is named only when
their best score reaches it. :func:`calibrate_identification` picks it on validation
identities for a target false-accept rate, and :func:`write_identification_calibration` adds it
to the file without touching the verification threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from meer.io import atomic_write_json

FILENAME = "calibration.json"
SETTINGS = ("U-U", "M-U", "M-M")


def pair_setting(first_masked: bool, second_masked: bool) -> str:
    """The verification setting of a pair from the two faces' mask verdicts."""
    return SETTINGS[int(first_masked) + int(second_masked)]


@dataclass
class Calibration:
    threshold: float  # cosine similarity; scores >= threshold mean "same person"
    protocol: str  # what it was chosen on, e.g. "synthetic-val M-U, best accuracy"
    accuracy: float | None = None  # accuracy at this threshold on that protocol
    setting: str | None = None  # U-U / M-U / M-M
    identification_threshold: float | None = None  # open-set: best score >= this names a person
    identification_far: float | None = None  # false-accept rate of unknown people at it (validation)
    identification_protocol: str | None = None  # what it was chosen on
    # one threshold per setting ({"U-U": t, "M-U": t, "M-M": t}) and the accuracy at each on the
    # protocol; None in single-threshold files, where ``threshold`` serves every setting
    thresholds: dict[str, float] | None = None
    accuracies: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("thresholds", "accuracies"):
            values = getattr(self, name)
            if values is not None and set(values) != set(SETTINGS):
                raise ValueError(f"calibration {name} must have exactly the settings {SETTINGS}, got {sorted(values)}")

    @property
    def per_setting(self) -> bool:
        """Whether there is one threshold per setting (else one for all)."""
        return self.thresholds is not None

    def threshold_for(self, setting: str | None) -> float:
        """The threshold of ``setting`` (U-U / M-U / M-M); None, or a single-threshold
        calibration, gives :attr:`threshold` (the M-U one when per-setting)."""
        if setting is not None and setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}: expected one of {SETTINGS}")
        if self.thresholds is None or setting is None:
            return self.threshold
        return self.thresholds[setting]

    @classmethod
    def from_settings(cls, chosen: dict[str, tuple[float, float]], protocol: str) -> Calibration:
        """A per-setting calibration from ``{setting: (threshold, accuracy)}`` for all three
        settings; the single :attr:`threshold` (for models that cannot tell masks) is M-U's."""
        threshold, accuracy = chosen["M-U"]
        return cls(threshold, protocol, accuracy, "M-U",
                   thresholds={s: float(chosen[s][0]) for s in SETTINGS},
                   accuracies={s: float(chosen[s][1]) for s in SETTINGS})


def write_calibration(checkpoint_dir: str | os.PathLike, calibration: Calibration) -> Path:
    return atomic_write_json(Path(checkpoint_dir) / FILENAME, asdict(calibration))


def read_calibration(checkpoint_dir: str | os.PathLike) -> Calibration | None:
    path = Path(checkpoint_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Calibration(**raw)
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is damaged: {err}") from err


@dataclass
class IdentificationCalibration:
    """An open-set identification threshold and how it does on the validation identities.

    threshold:   a probe is named when its best person's score is at least this
    far:         false-accept rate: share of unknown probes named as someone (at most the target)
    dir:         detection-and-identification rate: share of known probes named correctly
    target_far:  the false-accept rate asked for
    num_known, num_unknown: probes of enrolled / of held-out validation identities
    """

    threshold: float
    far: float
    dir: float
    target_far: float
    num_known: int
    num_unknown: int


def calibrate_identification(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    known: np.ndarray,
    known_labels: np.ndarray,
    unknown: np.ndarray,
    target_far: float = 0.01,
) -> IdentificationCalibration:
    """Pick the identification threshold on validation identities (never on test data).

    gallery [G, D] with gallery_labels [G]: templates of the enrolled validation people (several
    per person allowed; a person's score is the max over their templates, as in meer.gallery).
    known [K, D] with known_labels [K]: probes of enrolled people; unknown [U, D]: probes of
    held-out people who are not in the gallery. Embeddings are L2-normalised here.

    The threshold is the lowest one at which at most ``target_far`` of the unknown probes reach
    it (so the measured FAR never exceeds the target); DIR is then measured on the known probes.
    """
    if not 0 < target_far < 1:
        raise ValueError(f"target_far must be in (0, 1), got {target_far}")
    if len(unknown) == 0 or len(known) == 0 or len(gallery) == 0:
        raise ValueError("identification calibration needs gallery templates, known probes and unknown probes")
    people, owner = np.unique(np.asarray(gallery_labels), return_inverse=True)

    def best_people(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = _unit(probes) @ _unit(gallery).T  # [P, G]
        per_person = np.full((len(probes), len(people)), -np.inf, np.float32)
        for person in range(len(people)):
            per_person[:, person] = scores[:, owner == person].max(axis=1)
        return per_person.max(axis=1), people[per_person.argmax(axis=1)]

    unknown_best, _ = best_people(unknown)
    known_best, known_named = best_people(known)
    # allowed false accepts; a threshold just above the (allowed+1)-th highest unknown score
    allowed = int(np.floor(target_far * len(unknown)))
    ranked = np.sort(unknown_best)[::-1]
    threshold = float(np.nextafter(np.float32(ranked[allowed]), np.float32(np.inf))) if allowed < len(ranked) else float(ranked[-1])
    far = float(np.mean(unknown_best >= threshold))
    correct = (known_named == np.asarray(known_labels)) & (known_best >= threshold)
    return IdentificationCalibration(threshold, far, float(correct.mean()), target_far, len(known), len(unknown))


def open_set_split(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(gallery, known, unknown)`` for an open-set calibration from one labelled set.

    Half the identities (chosen with ``seed``) are enrolled: the first image of each is its
    gallery template and their other images are known probes; every image of the other half
    is an unknown probe. Identities with a single image can only be unknown.
    """
    labels = np.asarray(labels)
    identities = np.random.default_rng(seed).permutation(np.unique(labels))
    several = [i for i in identities if (labels == i).sum() > 1]
    enrolled = set(several[: len(identities) // 2])
    gallery, known, unknown = [], [], []
    for identity in identities:
        rows = np.flatnonzero(labels == identity)
        if identity in enrolled:
            gallery.append(rows[0])
            known.extend(rows[1:])
        else:
            unknown.extend(rows)
    return np.array(gallery, np.int64), np.array(known, np.int64), np.array(unknown, np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def write_identification_calibration(checkpoint_dir: str | os.PathLike, result: IdentificationCalibration, protocol: str) -> Path:
    """Add the identification threshold to ``calibration.json``, keeping its verification
    calibration (which must be there first: ``meer eval --calibrate``)."""
    current = read_calibration(checkpoint_dir)
    if current is None:
        raise ValueError(f"{checkpoint_dir} has no calibration yet: calibrate verification first (meer eval --calibrate M-U)")
    updated = replace(current, identification_threshold=result.threshold, identification_far=result.far,
                      identification_protocol=f"{protocol}, target FAR {result.target_far:g}")
    return write_calibration(checkpoint_dir, updated)
