"""The open-set identification threshold (meer.calibration): known answers on hand-made
embeddings, the open-set split's rules, and what is stored. Found missing by mutation testing
(issue #18)."""

import numpy as np
import pytest

from meer.calibration import (
    Calibration,
    _unit,
    calibrate_identification,
    open_set_split,
    read_calibration,
    write_calibration,
    write_identification_calibration,
)


def at(*degrees: float, scale: float = 1.0) -> np.ndarray:
    """Points on a circle of radius ``scale``: cosine similarity is the cosine of the angle."""
    radians = np.radians(degrees)
    return scale * np.stack([np.cos(radians), np.sin(radians)], 1).astype(np.float32)


# ann has two templates (0 and 60 degrees), bob one (180 degrees)
GALLERY, OWNERS = at(0, 60, 180), np.array(["ann", "ann", "bob"])


def test_the_threshold_lets_through_at_most_the_target_share_of_unknown_faces():
    # unknown probes whose nearest template is 10, 50, 40 and 70 degrees away
    unknown = at(70, 110, 140, 250, scale=3.0)  # not unit: calibrate_identification normalises
    best = np.array([np.cos(np.radians(10)), np.cos(np.radians(50)), np.cos(np.radians(40)), np.cos(np.radians(70))])
    # known probes: ann and bob, named right and well above the threshold; one of bob's named
    # ann (35 degrees from ann's second template, above the threshold); one of bob's named bob
    # but below it (50 degrees): only the first two count
    known = at(5, 175, 95, 130, scale=2.0)
    labels = np.array(["ann", "bob", "bob", "bob"])
    result = calibrate_identification(GALLERY, OWNERS, known, labels, unknown, target_far=0.25)
    # one false accept allowed out of 4: the threshold sits just above the second best unknown score
    second = np.sort(best)[::-1][1]
    assert result.threshold == float(np.nextafter(np.float32(second), np.float32(np.inf)))
    assert result.far == 0.25 and result.target_far == 0.25
    assert result.dir == 0.5
    assert (result.num_known, result.num_unknown) == (4, 4)
    assert calibrate_identification(GALLERY, OWNERS, known, labels, at(*range(0, 360, 3))).target_far == 0.01


def test_a_strict_target_admits_no_unknown_face():
    unknown = at(70, 110, 140, 250)
    result = calibrate_identification(GALLERY, OWNERS, at(1), np.array(["ann"]), unknown, target_far=0.2)
    assert result.far == 0.0  # floor(0.2 * 4) = 0 false accepts
    assert result.threshold == float(np.nextafter(np.float32(np.cos(np.radians(10))), np.float32(np.inf)))
    assert result.dir == 1.0  # cos 1 degree passes


@pytest.mark.parametrize("far", [0.0, 1.0, -0.1])
def test_the_target_must_be_a_rate(far):
    with pytest.raises(ValueError, match=rf"^target_far must be in \(0, 1\), got {far}$"):
        calibrate_identification(GALLERY, OWNERS, at(1), np.array(["ann"]), at(90), target_far=far)


@pytest.mark.parametrize("empty", ["gallery", "known", "unknown"])
def test_every_part_is_needed(empty):
    parts = {"gallery": GALLERY, "known": at(1), "unknown": at(90)}
    parts[empty] = np.zeros((0, 2), np.float32)
    with pytest.raises(ValueError, match="^identification calibration needs gallery templates, known probes and unknown probes$"):
        calibrate_identification(parts["gallery"], OWNERS[: len(parts["gallery"])], parts["known"], np.array(["ann"]),
                                 parts["unknown"], target_far=0.1)


def test_unit_rows_and_a_zero_row_left_at_zero():
    out = _unit(np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]))
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]])


def test_the_open_set_split_enrols_half_the_people_with_one_template_each():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 5])  # 2 and 5 have a single image
    gallery, known, unknown = open_set_split(labels, seed=3)
    assert gallery.dtype == known.dtype == unknown.dtype == np.int64
    assert sorted([*gallery, *known, *unknown]) == list(range(len(labels)))  # every image, once
    enrolled = set(labels[gallery])
    assert len(gallery) == len(enrolled) == 3  # half of the 6 people
    assert not enrolled & {2, 5}  # a single image cannot be both template and probe
    for person in enrolled:
        rows = np.flatnonzero(labels == person)
        assert gallery[list(labels[gallery]).index(person)] == rows[0]  # its first image
        assert set(rows[1:]) <= set(known)
    assert set(labels[unknown]).isdisjoint(enrolled) and set(labels[known]) <= enrolled
    assert [a.tolist() for a in open_set_split(labels, seed=3)] == [gallery.tolist(), known.tolist(), unknown.tolist()]
    others = {tuple(open_set_split(labels, seed=s)[0]) for s in range(8)}
    assert len(others) > 1  # the seed chooses who is enrolled
    assert [a.tolist() for a in open_set_split(labels)] == [a.tolist() for a in open_set_split(labels, seed=0)]


@pytest.mark.parametrize("labels", [[], [7, 8, 9]])
def test_empty_parts_of_the_split_are_still_index_arrays(labels):
    # nobody with two images: no gallery, no known probes (and no one at all: nothing)
    for part in open_set_split(np.array(labels, np.int64)):
        assert part.dtype == np.int64


def test_the_identification_threshold_joins_the_verification_calibration(tmp_path):
    result = calibrate_identification(GALLERY, OWNERS, at(1), np.array(["ann"]), at(70, 110, 140, 250), target_far=0.25)
    with pytest.raises(ValueError, match=rf"^{tmp_path} has no calibration yet: calibrate verification first"):
        write_identification_calibration(tmp_path, result, "val")
    write_calibration(tmp_path, Calibration(0.4, "M-U val", 0.9, "M-U"))
    path = write_identification_calibration(tmp_path, result, "val open-set")
    stored = read_calibration(tmp_path)
    assert path.parent == tmp_path and (stored.threshold, stored.protocol, stored.accuracy) == (0.4, "M-U val", 0.9)
    assert (stored.identification_threshold, stored.identification_far) == (result.threshold, result.far)
    assert stored.identification_protocol == "val open-set, target FAR 0.25"
