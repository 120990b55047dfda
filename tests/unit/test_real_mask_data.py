"""Photos of real masks as training data: the per-row flag ``meer prepare`` records, samples
without a clean twin, and sources mixed by weight."""

import dataclasses

import numpy as np
import pytest

from meer.cli import main
from meer.data.cache import FaceCache
from meer.data.dataset import MaskedFaces, StepSampler, mask_renderer
from meer.data.faceset import mix
from meer.data.masks import MASK_CLASSES, REAL_MASK
from meer.data.prepare import masked_flags, prepare_dataset
from meer.data.synthetic import SyntheticFaces
from tests.unit.test_prepare import fake_detector, photo  # noqa: F401  (fixture)


def rmfrd_like(root):
    """Two people: masked_01.jpg, Masked_02.PNG, unmasked_01.png, one 'unmasked' with 'masked' inside."""
    names = {"a": ["masked_01.png", "unmasked_01.png", "unmasked_02.png"],
             "b": ["Masked_02.PNG", "unmasked_01.png", "premasked_x.png"]}
    for i, (person, files) in enumerate(names.items()):
        (root / person).mkdir(parents=True)
        for j, name in enumerate(files):
            (root / person / name).write_bytes(photo(10 * i + j))
    return root


def test_the_naming_rule_flags_masked_files_only(tmp_path, fake_detector):  # noqa: F811
    source = rmfrd_like(tmp_path / "src")
    report = prepare_dataset(source, tmp_path / "out", size=48, workers=1, progress=False)
    cache = FaceCache.open(tmp_path / "out")
    flagged = {key for key, m in zip(cache.paths, cache.masked) if m}
    assert flagged == {"a/masked_01.png", "b/Masked_02.PNG"}
    assert report.masked == 2 and cache.manifest["counts"]["masked"] == 2
    assert np.array_equal(cache.faces.masked, cache.masked)
    assert cache.manifest["settings"]["masked"] == "name masked_*"


def test_a_list_replaces_the_rule_and_a_listed_typo_is_an_error(tmp_path, fake_detector, capsys):  # noqa: F811
    source = rmfrd_like(tmp_path / "src")
    listed = tmp_path / "masked.txt"
    listed.write_text("b/premasked_x.png\n\n")
    assert main(["prepare", str(source), "-o", str(tmp_path / "out"), "--size", "48", "--workers", "1", "--quiet",
                 "--masked-list", str(listed)]) == 0
    cache = FaceCache.open(tmp_path / "out")
    assert [k for k, m in zip(cache.paths, cache.masked) if m] == ["b/premasked_x.png"]

    listed.write_text("b/premasked_x.png\nc/nobody.png\n")
    assert main(["prepare", str(source), "-o", str(tmp_path / "out2"), "--workers", "1", "--quiet",
                 "--masked-list", str(listed)]) != 0
    err = capsys.readouterr().err
    assert "not in the source" in err and "c/nobody.png" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()


def test_pattern_override_and_none():
    keys = ["a/masked_1.jpg", "a/x_mask.jpg", "a/unmasked_1.jpg"]
    assert masked_flags(keys, "*_mask.*")[0].tolist() == [False, True, False]
    flags, rule = masked_flags(keys, "")
    assert not flags.any() and rule == "none"


def test_a_cache_without_the_flag_reads_as_unmasked(tmp_path, fake_detector):  # noqa: F811
    source = rmfrd_like(tmp_path / "src")
    prepare_dataset(source, tmp_path / "out", size=48, workers=1, progress=False)
    (tmp_path / "out" / "masked.npy").unlink()  # as written before the flag existed
    assert not FaceCache.open(tmp_path / "out").faces.real_masked.any()


@pytest.fixture(scope="module")
def faces():
    base = SyntheticFaces(num_identities=4, images_per_identity=4, size=48, seed=2).generate()
    masked = np.zeros(len(base), bool)
    masked[::4] = True  # the first photo of each person shows a real mask
    return dataclasses.replace(base, masked=masked)


def test_a_real_mask_is_its_own_masked_face_with_no_twin(faces):
    dataset = MaskedFaces(faces, mask_renderer(["surgical"]), mask_prob=1.0, hflip=False, seed=0)
    real = dataset[0]
    assert real["mask_type"].item() == REAL_MASK and MASK_CLASSES[REAL_MASK] == "real"
    assert real["twin"].item() == 0.0
    assert real["masked"].equal(real["clean"]) and real["occlusion"].sum() == 0
    drawn = dataset[1]  # an unmasked photo still gets a synthetic mask, with its twin
    assert drawn["twin"].item() == 1.0 and drawn["mask_type"].item() == 1
    assert not drawn["masked"].equal(drawn["clean"])


def test_mix_keeps_identities_apart_and_records_the_source(faces):
    other = SyntheticFaces(num_identities=3, images_per_identity=2, size=48, seed=5).generate()
    mixed = mix([other, faces])
    assert mixed.num_identities == 3 + 4
    assert mixed.source.tolist() == [0] * 6 + [1] * 16
    assert mixed.masked[:6].sum() == 0 and np.array_equal(mixed.masked[6:], faces.masked)
    assert set(mixed.labels[:6]) == {0, 1, 2} and set(mixed.labels[6:]) == {3, 4, 5, 6}
    assert mixed.subset(np.array([6, 7])).masked.tolist() == [True, False]
    with pytest.raises(ValueError, match="different sizes"):
        mix([other, other.resized(32)])


def test_weighted_sampler_draws_each_source_by_its_weight_and_resumes():
    source = np.array([0] * 900 + [1] * 100)
    weights = np.array([0.25, 0.75])
    p = (weights / np.bincount(source))[source]
    p /= p.sum()
    sampler = StepSampler(1000, 20, seed=3, probabilities=p)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(200)]
    rows = np.array([k % 1000 for batch in batches for k in batch])
    share = (source[rows] == 1).mean()
    assert share == pytest.approx(0.75, abs=0.02)  # 10% of the rows, 75% of the draws
    assert all(len(set(k % 1000 for k in batch)) == 20 for batch in batches)  # no repeats in a batch
    resumed = iter(StepSampler(1000, 20, seed=3, start_step=150, probabilities=p))
    assert next(resumed) == batches[150]
    assert len({k // 1000 for k in batches[7]}) == 1 and batches[7][0] // 1000 == 7  # keys carry the step
    halves = [next(iter(StepSampler(1000, 10, seed=3, rank=r, world_size=2, probabilities=p))) for r in (0, 1)]
    assert halves[0] + halves[1] == batches[0]
