"""Evaluate one trained system on aligned faces: verification in U-U / M-U / M-M and synthesis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from meer.data.faceset import FaceSet
from meer.eval.masked_copies import MaskedCopies
from meer.eval.pairs import SETTINGS, Pairs, setting_embeddings
from meer.eval.synthesis import SynthesisResult, evaluate_restorations
from meer.eval.verification import VerificationResult, best_threshold, cosine_scores, verify_pairs
from meer.inference.batched import Restorations, embed_images, unmask_images
from meer.models.meer import MEER


@dataclass
class Embeddings:
    clean: np.ndarray  # [N, D] of the unmasked faces
    masked: np.ndarray  # [N, D] of the same faces with their test masks


def embed_both(
    model: MEER, faces: FaceSet, masked: MaskedCopies, flip: bool = False, batch_size: int = 256, progress: bool = False
) -> Embeddings:
    return Embeddings(
        embed_images(model, faces.images, batch_size, flip, progress, "embed unmasked"),
        embed_images(model, masked.images, batch_size, flip, progress, "embed masked"),
    )


def verify_settings(embeddings: Embeddings, pairs: Pairs, metric: str = "cosine") -> dict[str, VerificationResult]:
    """k-fold verification (folds as in ``pairs.fold``) in each of the three settings."""
    results = {}
    for setting in SETTINGS:
        first, second = setting_embeddings(setting, pairs, embeddings.clean, embeddings.masked)
        results[setting] = verify_pairs(first, second, pairs.same, pairs.fold, metric=metric)
    return results


def setting_scores(embeddings: Embeddings, pairs: Pairs, setting: str) -> np.ndarray:
    """Cosine scores ``[P]`` of the pairs in one setting."""
    return cosine_scores(*setting_embeddings(setting, pairs, embeddings.clean, embeddings.masked))


def best_thresholds(embeddings: Embeddings, pairs: Pairs) -> dict[str, tuple[float, float]]:
    """``{setting: (threshold, accuracy)}``: the accuracy-maximising threshold over all pairs of
    each setting (what ``meer eval --calibrate all`` stores; use validation pairs)."""
    return {s: best_threshold(setting_scores(embeddings, pairs, s), pairs.same) for s in SETTINGS}


def accuracy_at_thresholds(embeddings: Embeddings, pairs: Pairs, thresholds: Mapping[str, float]) -> dict[str, float]:
    """Accuracy over all pairs of each setting at a fixed threshold per setting, deciding
    ``same iff score >= threshold`` as :meth:`meer.api.FaceModel.verify` does: what a user of
    a checkpoint gets, unlike the k-fold accuracy, whose thresholds are chosen on the test folds."""
    return {s: float(np.mean((setting_scores(embeddings, pairs, s) >= thresholds[s]) == pairs.same))
            for s in SETTINGS if s in thresholds}


def evaluate_synthesis(
    model: MEER, faces: FaceSet, masked: MaskedCopies, embeddings: Embeddings | None = None,
    batch_size: int = 128, progress: bool = False,
) -> tuple[SynthesisResult, Restorations]:
    """PSNR / SSIM inside the true occlusion and identity similarity of restored vs clean faces."""
    restorations = unmask_images(model, masked.images, batch_size, progress)
    clean = embeddings.clean if embeddings is not None else embed_images(model, faces.images, batch_size)
    restored = embed_images(model, restorations.restored, batch_size)
    result = evaluate_restorations(
        restorations.restored, np.asarray(faces.images), masked.occlusion, restored, clean
    )
    return result, restorations
