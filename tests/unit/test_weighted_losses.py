"""Per-sample weights in the losses (issue #14: a photo of a real mask has no clean twin, so the
terms that read the twin give it weight 0). Known answers: weighting a sample 0 is leaving it out.
Found missing by mutation testing (issue #18)."""

import pytest
import torch

from meer.losses import weighted_mean
from meer.losses.decoupling import occlusion_loss
from meer.losses.identity import id_preserving_loss, pixel_loss
from meer.train.objectives import cosine_distance, twin_rows

KEEP_FIRST = torch.tensor([1.0, 0.0])


def test_weighted_mean_of_per_sample_values():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert weighted_mean(values) == 2.5
    assert weighted_mean(values, torch.tensor([1.0, 0.0, 1.0, 0.0])) == 2.0
    assert weighted_mean(values, torch.tensor([True, False, False, True])) == 2.5  # a flag works too
    assert weighted_mean(values.half(), torch.tensor([0.0, 1.0, 0.0, 0.0])).item() == 2.0
    # the values' precision is kept whatever the weight's
    assert weighted_mean(values.half(), torch.ones(4, dtype=torch.float64)).dtype == torch.float16


def test_a_term_no_sample_applies_to_is_zero_and_keeps_the_graph():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = weighted_mean(values, torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(values.grad, torch.zeros(2))


@pytest.mark.parametrize("twin, expected", [(None, None), ([1, 1, 1], None), ([1, 0, 1], [True, False, True]),
                                            ([0.0, 1.0, 0.0], [False, True, False])])
def test_twin_rows_names_the_samples_with_a_clean_twin(twin, expected):
    batch = {"masked": torch.zeros(3)} if twin is None else {"twin": torch.tensor(twin)}
    rows = twin_rows(batch)
    assert (rows is None) if expected is None else rows.tolist() == expected


def two_samples(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    restored, clean = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    occlusion = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    return restored, clean, occlusion


def test_pixel_loss_with_a_sample_weighted_zero_is_the_loss_of_the_other():
    restored, clean, occlusion = two_samples()
    alone = pixel_loss(restored[:1], clean[:1], occlusion[:1], 4.0)
    assert pixel_loss(restored, clean, occlusion, 4.0, KEEP_FIRST).item() == pytest.approx(alone.item(), rel=1e-6)
    assert pixel_loss(restored, clean, occlusion, 4.0).item() != pytest.approx(alone.item(), rel=1e-3)
    assert pixel_loss(restored, clean, occlusion, 4.0, KEEP_FIRST.double()).dtype == torch.float32


def test_occlusion_loss_with_a_sample_weighted_zero_is_the_loss_of_the_other():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(2, 1, 4, 4, generator=g), (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    alone = occlusion_loss(logits[:1], target[:1])
    assert occlusion_loss(logits, target, weight=KEEP_FIRST).item() == pytest.approx(alone.item(), rel=1e-6)
    both = (occlusion_loss(logits[:1], target[:1]) + occlusion_loss(logits[1:], target[1:])) / 2
    assert occlusion_loss(logits, target).item() == pytest.approx(both.item(), rel=1e-6)  # Dice per sample


@pytest.mark.parametrize("loss", [id_preserving_loss, cosine_distance])
def test_embedding_distances_with_a_sample_weighted_zero_are_the_distance_of_the_other(loss):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 16, generator=g), torch.randn(2, 16, generator=g)
    alone = loss(a[:1], b[:1])
    assert loss(a, b, KEEP_FIRST).item() == pytest.approx(alone.item(), rel=1e-6)
    assert loss(a, b).item() == pytest.approx((alone + loss(a[1:], b[1:])).item() / 2, rel=1e-6)
