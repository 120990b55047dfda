"""The evaluation suite behind ``meer eval``: run the protocols a user names on one model and
write a report folder (metrics.json, summary.md, ROC curves, a restoration grid)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meer.data.faceset import FaceSet
from meer.eval.evaluate import (
    Embeddings,
    accuracy_at_thresholds,
    best_thresholds,
    embed_both,
    evaluate_synthesis,
    setting_scores,
    verify_settings,
)
from meer.eval.masked_copies import MaskedCopies, render_test_masks
from meer.eval.pairs import SETTINGS, Pairs
from meer.eval.real import MaskedIdentification
from meer.eval.report import image_grid, markdown_table, plot_roc, write_metrics_json
from meer.eval.synthesis import SynthesisResult
from meer.eval.verification import VerificationResult, best_threshold
from meer.inference.batched import Restorations
from meer.io import atomic_write_text
from meer.models.meer import MEER

if TYPE_CHECKING:
    from meer.calibration import Calibration

log = logging.getLogger(__name__)


@dataclass
class VerificationSet:
    """Faces and pairs of one verification protocol (e.g. LFW folds 6-10)."""

    name: str
    faces: FaceSet
    pairs: Pairs


@dataclass
class ProtocolResult:
    """What :func:`run_verification` measured on one protocol.

    verification: ``{setting: VerificationResult}`` for U-U, M-U and M-M
    embeddings:   the clean and masked embeddings the scores came from
    synthesis:    restoration quality inside the mask; None without a generator
    restorations, masked, faces: the images behind it (for the restoration grid)
    """

    verification: dict[str, VerificationResult]
    embeddings: Embeddings
    synthesis: SynthesisResult | None = None
    restorations: Restorations | None = None
    masked: MaskedCopies | None = None
    faces: FaceSet | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"verification": {setting: metrics}, "synthesis": metrics}`` for a JSON file;
        ``synthesis`` only when it was measured."""
        out: dict[str, Any] = {"verification": {k: v.to_dict() for k, v in self.verification.items()}}
        if self.synthesis is not None:
            out["synthesis"] = self.synthesis.to_dict()
        return out


@dataclass
class StoredAccuracy:
    """The accuracy on a protocol at the threshold a checkpoint stores for one setting."""

    threshold: float
    accuracy: float

    def to_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "accuracy": self.accuracy}


def run_verification(
    model: MEER, protocol: VerificationSet, mask_seed: int = 12345, mask_types: tuple[str, ...] = ("surgical", "n95", "cloth"),
    flip: bool = False, progress: bool = False,
) -> ProtocolResult:
    """U-U / M-U / M-M verification (+ synthesis quality when the model has a generator)."""
    faces = protocol.faces.resized(model.input_size)
    masked = render_test_masks(faces, mask_seed, mask_types)
    embeddings = embed_both(model, faces, masked, flip=flip, progress=progress)
    result = ProtocolResult(verify_settings(embeddings, protocol.pairs), embeddings, masked=masked, faces=faces)
    if model.generator is not None:
        result.synthesis, result.restorations = evaluate_synthesis(model, faces, masked, embeddings, progress=progress)
    return result


def pooled_threshold(result: ProtocolResult, protocol: VerificationSet, setting: str) -> tuple[float, float]:
    """The accuracy-maximising cosine threshold over all pairs of ``setting``: (threshold, accuracy)."""
    return best_threshold(setting_scores(result.embeddings, protocol.pairs, setting), protocol.pairs.same)


def pooled_thresholds(result: ProtocolResult, protocol: VerificationSet) -> dict[str, tuple[float, float]]:
    """:func:`pooled_threshold` of every setting: ``{setting: (threshold, accuracy)}``."""
    return best_thresholds(result.embeddings, protocol.pairs)


def stored_threshold_accuracy(embeddings: Embeddings, protocol: VerificationSet,
                              calibration: Calibration) -> dict[str, StoredAccuracy]:
    """``{setting: StoredAccuracy}`` on ``protocol`` at the thresholds a checkpoint stores (one
    per setting, or its single threshold for all): the accuracy a user gets."""
    thresholds = {s: calibration.threshold_for(s) for s in SETTINGS}
    accuracy = accuracy_at_thresholds(embeddings, protocol.pairs, thresholds)
    return {s: StoredAccuracy(thresholds[s], accuracy[s]) for s in SETTINGS}


def verification_rows(name: str, result: ProtocolResult) -> dict[str, Any]:
    """One table row (percentages) of a protocol's result."""
    row: dict[str, Any] = {"name": name}
    for setting in SETTINGS:
        v = result.verification[setting]
        row[f"acc_{setting}"] = v.accuracy_mean * 100
        row[f"std_{setting}"] = v.accuracy_std * 100
    mu = result.verification["M-U"]
    row["tar2"] = mu.tar_at_far[1e-2] * 100
    row["tar3"] = mu.tar_at_far[1e-3] * 100
    row["auc"], row["eer"] = mu.auc, mu.eer * 100
    synthesis = result.synthesis
    row["psnr"] = synthesis.psnr if synthesis else None
    row["ssim"] = synthesis.ssim if synthesis else None
    row["idsim"] = synthesis.identity_similarity if synthesis else None
    return row


def verification_columns(first_header: str) -> list[tuple[str, str, str]]:
    """Columns for :func:`markdown_table` over :func:`verification_rows` rows."""
    return [
        ("name", first_header, "{}"),
        ("acc_U-U", "U-U acc %", "{:.2f}"), ("acc_M-U", "M-U acc %", "{:.2f}"), ("std_M-U", "M-U std", "{:.2f}"),
        ("acc_M-M", "M-M acc %", "{:.2f}"), ("tar2", "M-U TAR@1e-2 %", "{:.1f}"),
        ("tar3", "M-U TAR@1e-3 %", "{:.1f}"), ("auc", "M-U AUC", "{:.4f}"), ("eer", "M-U EER %", "{:.2f}"),
        ("psnr", "PSNR mask dB", "{:.2f}"), ("ssim", "SSIM mask", "{:.3f}"), ("idsim", "ID sim", "{:.3f}"),
    ]


def write_report(out: Path, name: str, checkpoint: str, results: dict[str, ProtocolResult],
                 identification: dict[str, MaskedIdentification] | None, extra: dict[str, Any],
                 stored: dict[str, dict[str, StoredAccuracy]] | None = None) -> Path:
    """metrics.json + summary.md + roc_<protocol>.png + restorations_<protocol>.png in ``out``.

    ``stored``: ``{protocol: stored_threshold_accuracy(...)}``, the accuracy at the checkpoint's
    calibrated thresholds, reported beside the k-fold accuracy."""
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"checkpoint": checkpoint, **extra, "verification": {}, "synthesis": {}}
    rows = []
    for protocol, result in results.items():
        saved = result.to_dict()
        metrics["verification"][protocol] = saved["verification"]
        if "synthesis" in saved:
            metrics["synthesis"][protocol] = saved["synthesis"]
            write_restoration_grid(out / f"restorations_{protocol}.png", result)
        plot_roc(result.verification, out / f"roc_{protocol}.png", f"{name}: ROC on {protocol}")
        rows.append(verification_rows(protocol, result))
    text = f"# meer eval: {name}\n\nCheckpoint: `{checkpoint}`\n\n"
    if rows:
        text += markdown_table(rows, verification_columns("Protocol")) + "\n\n"
    if stored:
        metrics["at_stored_thresholds"] = {p: {s: v.to_dict() for s, v in per_setting.items()}
                                           for p, per_setting in stored.items()}
        stored_rows = [{"protocol": protocol, "setting": setting, "threshold": v.threshold,
                        "accuracy": v.accuracy * 100,
                        "kfold": results[protocol].verification[setting].accuracy_mean * 100}
                       for protocol, per_setting in stored.items() for setting, v in per_setting.items()]
        text += "Accuracy at the checkpoint's stored thresholds (`calibration.json`) vs k-fold accuracy:\n\n"
        text += markdown_table(stored_rows, [("protocol", "Protocol", "{}"), ("setting", "setting", "{}"),
                                             ("threshold", "stored threshold", "{:.4f}"),
                                             ("accuracy", "acc at stored %", "{:.2f}"),
                                             ("kfold", "k-fold acc %", "{:.2f}")]) + "\n\n"
    if identification:
        metrics["identification"] = {k: v.to_dict() for k, v in identification.items()}
        id_rows = [{"protocol": k, "r1": v.result.rank_accuracy[1] * 100, "r5": v.result.rank_accuracy[5] * 100,
                    "probes": v.result.num_probes, "ids": v.result.num_gallery_identities}
                   for k, v in identification.items()]
        text += markdown_table(id_rows, [("protocol", "Protocol", "{}"), ("r1", "rank-1 %", "{:.2f}"),
                                         ("r5", "rank-5 %", "{:.2f}"), ("probes", "probes", "{}"),
                                         ("ids", "gallery identities", "{}")]) + "\n"
    write_metrics_json(out / "metrics.json", metrics)
    atomic_write_text(out / "summary.md", text)
    return out


def write_restoration_grid(path: Path, result: ProtocolResult, rows: int = 8) -> None:
    masked, restorations, faces = result.masked, result.restorations, result.faces
    chosen = np.flatnonzero(masked.mask_type > 0)[:rows]
    grid = [[masked.images[i], (restorations.occlusion[i] * 255).round().astype(np.uint8),
             restorations.restored[i], np.asarray(faces.images[i])] for i in chosen]
    image_grid(grid, path, col_labels=["masked input", "predicted occlusion", "restored", "clean"])
