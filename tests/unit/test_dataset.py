"""Training samples and the step sampler: exact pairs, determinism, resumable streams, ranks."""

import numpy as np
import pytest
import torch

from meer.data.dataset import MaskedFaces, StepSampler, hflip, mask_renderer, to_tensor, to_uint8
from meer.data.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(num_identities=6, images_per_identity=4, size=48, seed=1).generate()


def test_sample_is_an_exact_masked_clean_pair(faces):
    dataset = MaskedFaces(faces, mask_renderer(["surgical", "n95", "cloth"]), mask_prob=1.0, hflip=False, seed=0)
    sample = dataset[3]
    assert sample["masked"].shape == sample["clean"].shape == (3, 48, 48)
    assert sample["occlusion"].shape == (1, 48, 48)
    assert sample["mask_type"] > 0 and sample["label"] == faces.labels[3]
    assert torch.equal(sample["clean"], to_tensor(faces.images[3]))
    changed = (sample["masked"] != sample["clean"]).any(0)
    covered = sample["occlusion"][0].bool()
    assert covered.any() and not (changed & ~covered).any(), "pixels changed outside the occlusion map"


def test_unmasked_share_and_zero_occlusion(faces):
    dataset = MaskedFaces(faces, mask_renderer(["cloth"]), mask_prob=0.0, seed=0)
    for i in range(len(dataset)):
        s = dataset[i]
        assert s["mask_type"] == 0 and s["occlusion"].sum() == 0 and torch.equal(s["masked"], s["clean"])


def test_same_key_gives_same_sample_and_epochs_differ(faces):
    dataset = MaskedFaces(faces, mask_renderer(["surgical", "cloth"]), mask_prob=0.5, seed=7)
    a, b = dataset[5], dataset[5]
    assert all(torch.equal(a[k], b[k]) for k in a)
    later = [dataset[len(faces) * e + 5]["masked"] for e in range(1, 6)]
    assert any(not torch.equal(a["masked"], x) for x in later)


def test_hflip_swaps_left_and_right_landmarks(faces):
    image, landmarks = faces.images[0], faces.landmarks[0]
    flipped, flipped_lm = hflip(image, landmarks)
    assert np.array_equal(flipped[:, ::-1], image)
    assert flipped_lm[0, 0] < flipped_lm[1, 0]  # left eye still has the smaller x
    np.testing.assert_allclose(flipped_lm[2, 0], 47 - landmarks[2, 0])


def test_uint8_round_trip(faces):
    images = torch.stack([to_tensor(im) for im in faces.images[:3]])
    assert np.array_equal(to_uint8(images), faces.images[:3])


def test_step_sampler_resumes_the_same_stream():
    full = StepSampler(50, batch_size=8, seed=3)
    stream = [b for _, b in zip(range(20), full)]
    resumed = [b for _, b in zip(range(12), StepSampler(50, batch_size=8, seed=3, start_step=8))]
    assert resumed == stream[8:]
    # each epoch (6 steps of 8 from 50) uses distinct samples
    first_epoch = [k for b in stream[:6] for k in b]
    assert len(set(first_epoch)) == 48 and all(k < 50 for k in first_epoch)
    assert all(50 <= k < 100 for b in stream[6:12] for k in b)


def test_step_sampler_ranks_split_the_global_batch():
    one = [b for _, b in zip(range(5), StepSampler(64, batch_size=8, seed=0))]
    ranks = [[b for _, b in zip(range(5), StepSampler(64, batch_size=4, seed=0, rank=r, world_size=2))] for r in range(2)]
    for step in range(5):
        assert ranks[0][step] + ranks[1][step] == one[step]


def test_step_sampler_rejects_a_dataset_smaller_than_a_batch():
    with pytest.raises(ValueError, match="smaller than one global batch"):
        StepSampler(10, batch_size=8, world_size=2)
