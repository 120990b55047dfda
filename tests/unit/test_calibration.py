"""Per-setting thresholds (issue 14): chosen on validation pairs, stored in calibration.json,
read back (old single-threshold files too) and applied to test pairs."""

import json

import numpy as np
import pytest

from meer.calibration import Calibration, pair_setting, read_calibration, write_calibration
from meer.eval.evaluate import Embeddings, accuracy_at_thresholds, best_thresholds, verify_settings
from meer.eval.identification import identify
from meer.eval.pairs import Pairs
from meer.eval.real import IdentificationCounts, MaskedIdentification
from meer.eval.suite import ProtocolResult, VerificationSet, stored_threshold_accuracy, write_report

# cosine of (U-U, M-U, M-M) for same and different pairs: the best threshold falls as masks come in
SAME = (0.8, 0.6, 0.4)
DIFFERENT = (0.4, 0.2, 0.0)


def scored_faces(num_pairs: int, seed: int, jitter: float = 0.05) -> tuple[Embeddings, Pairs]:
    """Pair ``i`` compares faces ``2i`` and ``2i+1``, built so that the three settings score
    ``SAME`` / ``DIFFERENT`` (each +- ``jitter``): clean_a . clean_b = U-U,
    clean_a . masked_b = M-U, masked_a . masked_b = M-M."""
    rng = np.random.default_rng(seed)
    clean, masked = np.zeros((2 * num_pairs, 4)), np.zeros((2 * num_pairs, 4))
    same = np.arange(num_pairs) % 2 == 0
    for i in range(num_pairs):
        uu, mu, mm = np.array(SAME if same[i] else DIFFERENT) + rng.uniform(-jitter, jitter, 3)
        a, b = 2 * i, 2 * i + 1
        clean[a] = [1, 0, 0, 0]
        clean[b] = [uu, np.sqrt(1 - uu**2), 0, 0]
        masked[b] = [mu, 0, np.sqrt(1 - mu**2), 0]
        y = mm / np.sqrt(1 - mu**2)
        masked[a] = [0, 0, y, np.sqrt(1 - y**2)]
    pairs = Pairs(np.arange(0, 2 * num_pairs, 2), np.arange(1, 2 * num_pairs, 2), same, np.arange(num_pairs) % 5)
    return Embeddings(clean.astype(np.float32), masked.astype(np.float32)), pairs


def test_pair_setting_follows_the_mask_verdicts():
    assert [pair_setting(False, False), pair_setting(True, False), pair_setting(False, True),
            pair_setting(True, True)] == ["U-U", "M-U", "M-U", "M-M"]


def test_per_setting_thresholds_are_found_stored_and_applied(tmp_path):
    val, val_pairs = scored_faces(200, seed=0)
    chosen = best_thresholds(val, val_pairs)
    for setting, same, different in zip(("U-U", "M-U", "M-M"), SAME, DIFFERENT):
        threshold, accuracy = chosen[setting]
        assert different + 0.05 <= threshold <= same - 0.05 and accuracy == 1.0
    write_calibration(tmp_path, Calibration.from_settings(chosen, "val per setting"))
    stored = read_calibration(tmp_path)
    assert stored.per_setting and stored.setting == "M-U"
    assert (stored.protocol, stored.accuracy) == ("val per setting", chosen["M-U"][1])
    assert stored.threshold == stored.threshold_for("M-U") == stored.threshold_for(None) == chosen["M-U"][0]
    assert stored.threshold_for("U-U") > stored.threshold_for("M-U") + 0.1 > stored.threshold_for("M-M") + 0.2
    assert stored.accuracies == {"U-U": 1.0, "M-U": 1.0, "M-M": 1.0}

    # new test pairs: the stored per-setting thresholds get every pair right, while one M-U
    # threshold for all accepts the different U-U pairs above it and rejects the same M-M pairs below it
    test, test_pairs = scored_faces(300, seed=1)
    protocol = VerificationSet("test", None, test_pairs)
    at_stored = stored_threshold_accuracy(test, protocol, stored)
    assert {s: v.accuracy for s, v in at_stored.items()} == {"U-U": 1.0, "M-U": 1.0, "M-M": 1.0}
    assert at_stored["U-U"].threshold == stored.threshold_for("U-U")
    single = stored_threshold_accuracy(test, protocol, Calibration(stored.threshold, "val M-U"))
    assert single["M-U"].accuracy == 1.0
    assert single["U-U"].accuracy < 0.9 and single["M-M"].accuracy < 0.9
    # accuracy_at_thresholds decides score >= threshold, as FaceModel.verify does
    scores_at = {"U-U": 0.8 + 0.05, "M-U": -1.0}
    assert accuracy_at_thresholds(test, test_pairs, scores_at) == {"U-U": 0.5, "M-U": 0.5}


def test_old_single_threshold_files_mean_one_threshold_for_every_setting(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps(
        {"threshold": 0.42, "protocol": "synthetic M-U", "accuracy": 0.9, "setting": "M-U"}))
    old = read_calibration(tmp_path)
    assert not old.per_setting
    assert [old.threshold_for(s) for s in ("U-U", "M-U", "M-M", None)] == [0.42] * 4
    with pytest.raises(ValueError, match="unknown setting"):
        old.threshold_for("M-X")


def test_a_calibration_missing_a_setting_is_refused(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps(
        {"threshold": 0.42, "protocol": "x", "thresholds": {"U-U": 0.5, "M-U": 0.42}}))
    with pytest.raises(ValueError, match="damaged"):
        read_calibration(tmp_path)


def test_report_shows_accuracy_at_the_stored_thresholds_beside_kfold(tmp_path):
    embeddings, pairs = scored_faces(100, seed=2)
    protocol = VerificationSet("val", None, pairs)
    result = ProtocolResult(verify_settings(embeddings, pairs), embeddings)
    calibration = Calibration(0.3, "x", thresholds={"U-U": 0.6, "M-U": 0.3, "M-M": 0.5},
                              accuracies={"U-U": 1.0, "M-U": 1.0, "M-M": 1.0})
    stored = {"val": stored_threshold_accuracy(embeddings, protocol, calibration)}
    write_report(tmp_path, "model", "ckpt", {"val": result}, None, {}, stored)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["at_stored_thresholds"]["val"]["M-M"] == {"threshold": 0.5, "accuracy": 0.5}
    summary = (tmp_path / "summary.md").read_text()
    assert "acc at stored %" in summary and "| val | M-M | 0.5000 | 50.00 | 100.00 |" in summary


def test_the_report_json_keeps_its_keys_for_identification(tmp_path):
    """metrics.json reads as before the results were typed: the identification entry is the
    result's JSON with the counts under "counts" (only those the protocol measured)."""
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(6, 8)).astype(np.float32)
    labels = np.arange(6)
    result = identify(gallery + 0.01, labels, gallery, labels, ranks=(1, 5))
    counts = IdentificationCounts(probes=6, gallery=6, probes_dropped=0, gallery_dropped=0, fallback_aligned=1,
                                  unmasked_loo_rank1=0.5)
    write_report(tmp_path, "model", "ckpt", {}, {"masked": MaskedIdentification(result, counts)}, {})
    entry = json.loads((tmp_path / "metrics.json").read_text())["identification"]["masked"]
    assert set(entry) == {"rank_accuracy", "num_probes", "num_gallery_identities", "num_gallery_images",
                          "aggregate", "counts"}
    assert entry["counts"] == {"probes": 6, "gallery": 6, "probes_dropped": 0, "gallery_dropped": 0,
                               "fallback_aligned": 1, "unmasked_loo_rank1": 0.5}
    assert entry["rank_accuracy"]["1"] == 1.0
    assert "| masked | 100.00 | 100.00 | 6 | 6 |" in (tmp_path / "summary.md").read_text()
    assert IdentificationCounts(probes=3, gallery=5).to_dict() == {"probes": 3, "gallery": 5}


def test_a_per_setting_calibration_must_name_every_setting():
    with pytest.raises(ValueError, match=r"^calibration thresholds must have exactly the settings \('U-U', 'M-U', 'M-M'\), got \['M-U', 'U-U'\]$"):
        Calibration(0.3, "val", thresholds={"U-U": 0.4, "M-U": 0.3})
