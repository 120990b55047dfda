"""The pure pieces of issue 14's bench script: variant parsing, run folders and the table over training seeds."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import their siblings by name

import real_mask_training  # noqa: E402


def test_a_variant_is_a_name_and_its_overrides():
    assert real_mask_training.parse_variant("heads x10:teacher.pull=0; optim.lr=0.001") == (
        "heads x10", ["teacher.pull=0", "optim.lr=0.001"])
    with pytest.raises(SystemExit, match="must look like"):
        real_mask_training.parse_variant("no overrides")
    assert real_mask_training.folder_name("with real masks, heads x10, seed 1") == "with-real-masks-heads-x10-seed-1"


def figures(rank1, rank5, tar):
    return {"rank1": rank1, "rank5": rank5, "tar_far_1e-2": tar}


def test_the_seed_table_gives_each_seeds_difference_and_their_mean(capsys):
    pair = ["without, all people", "with, all people"]
    systems = {
        pair[0]: {"train_seed": 0, "test": {"rmfrd_dev": figures(40.0, 60.0, 25.0), "lfw_all_kinds": {}}},
        pair[1]: {"train_seed": 0, "test": {"rmfrd_dev": figures(36.0, 66.0, 27.0), "lfw_all_kinds": {}}},
        f"{pair[0]}, seed 1": {"seed_test": {"rmfrd_dev": figures(35.0, 55.0, 22.0)}},
        f"{pair[1]}, seed 1": {"seed_test": {"rmfrd_dev": figures(37.0, 61.0, 27.0)}},
    }
    real_mask_training.print_seed_table({"systems": systems}, pair, [1])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert "rank-1 difference" in lines[0] and len(lines) == 5  # header, rule, seeds 0 and 1, mean
    seed0, seed1, mean = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:])
    assert seed0[:4] == ["0", "40.0", "36.0", "-4.0"] and seed1[:4] == ["1", "35.0", "37.0", "+2.0"]
    assert mean[:4] == ["mean", "37.5", "36.5", "-1.0"] and mean[-1] == "+3.5"  # TAR: (+2 + +5) / 2


def test_cutouts_in_a_variant_name_the_file_written_on_first_use(tmp_path):
    calls = []

    def write():
        calls.append(1)
        return tmp_path / "cutouts.safetensors"

    plain = ["teacher.pull=0"]
    assert real_mask_training.with_cutouts(plain, write) is plain and not calls
    filled = real_mask_training.with_cutouts(["teacher.pull=0", "data.real_masks={cutouts}"], write)
    assert filled == ["teacher.pull=0", f"data.real_masks={(tmp_path / 'cutouts.safetensors').resolve()}"]
    assert calls == [1]


def test_the_curve_reuses_the_names_of_the_comparison_runs():
    import real_mask_curve

    name = real_mask_curve.system_name
    real_only = ["teacher.pull=0", "data.real_masks={cutouts}", "data.real_mask_share=1.0"]
    assert name("cutouts only", real_only, 0, 63, 0) == "without real masks"
    assert name("cutouts only", real_only, 63, 63, 0) == "with real masks, cutouts only"
    assert name("cutouts only", real_only, 16, 63, 1) == "with real masks of 16 people, cutouts only, seed 1"
    # a variant that also changes other settings has its own counterpart, as in real_mask_training.py,
    # so the curve never resumes a counterpart trained with other settings
    faster = [*real_only, "optim.lr=0.001"]
    assert real_mask_training.counterpart_overrides(faster) == ["optim.lr=0.001"]
    assert name("fast", faster, 0, 63, 2) == "without real masks (fast), seed 2"


def test_the_gain_interval_resamples_probes_in_pairs():
    import numpy as np
    import real_mask_curve

    hits, misses = np.ones((2, 40), int), np.full((2, 40), 3)
    assert real_mask_curve.gain_interval(hits, misses, seed=0) == (100.0, 100.0)
    assert real_mask_curve.gain_interval(misses, misses, seed=0) == (0.0, 0.0)
    # seed 0 gains 10 probes of 40 (+25 points), seed 1 loses 2 (-5): the mean gain is +10, and
    # resampling the probes keeps the pairs, so the interval lies around it and inside the extremes
    with_real, without = misses.copy(), misses.copy()
    with_real[0, :10] = 1
    without[1, :2] = 1
    low, high = real_mask_curve.gain_interval(with_real, without, seed=0)
    assert -5.0 < low < 10.0 < high < 25.0
