"""Known answers for MEER's loss and head mechanisms, written so that the usual slips (a weight
inverted, a centre left unnormalised, a schedule flattened) change the figure they check."""

import math

import pytest
import torch
import torch.nn.functional as F

from meer.config import StageConfig
from meer.losses.decoupling import occlusion_loss, orthogonality_loss, resize_occlusion
from meer.losses.gan import GANLoss, feature_matching_loss
from meer.losses.identity import id_preserving_loss, pixel_loss
from meer.models.heads import CombinedMargin, MarginSoftmaxLoss, make_margin
from meer.models.partial_fc import ShardedMarginSoftmaxLoss, shard_bounds
from meer.train.trainer import lr_lambda


def test_pixel_loss_weighs_errors_inside_the_occlusion_more():
    clean = torch.zeros(1, 3, 2, 2)
    occlusion = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # one covered pixel of four
    inside_error = clean.clone()
    inside_error[..., 0, 0] = 1.0
    outside_error = clean.clone()
    outside_error[..., 1, 1] = 1.0
    # weights 1 + 4 * occlusion: 5 inside, 1 outside, sum 8 per channel
    assert pixel_loss(inside_error, clean, occlusion, inside=4.0).item() == pytest.approx(3 * 5 / (8 * 3))
    assert pixel_loss(outside_error, clean, occlusion, inside=4.0).item() == pytest.approx(3 * 1 / (8 * 3))
    assert pixel_loss(outside_error, clean, occlusion, inside=0.0).item() == pytest.approx(3 / 12)


def test_id_preserving_loss_is_cosine_distance_and_leaves_the_target_alone():
    restored = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    clean = torch.tensor([[0.0, 3.0], [0.0, 1.0]], requires_grad=True)
    loss = id_preserving_loss(restored, clean)
    assert loss.item() == pytest.approx((1 - 0) / 2 + (1 - 1) / 2)
    loss.backward()
    assert clean.grad is None and restored.grad is not None and restored.grad.abs().sum() > 0


def test_occlusion_loss_is_bce_plus_dice():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy(prob, target)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    assert occlusion_loss(logits, target).item() == pytest.approx((bce + dice).item(), rel=1e-5)
    # a confident empty prediction for an unmasked face costs (almost) nothing
    assert occlusion_loss(torch.full((1, 1, 2, 2), -20.0), torch.zeros(1, 1, 2, 2)).item() < 1e-6


def test_occlusion_target_is_the_covered_share_of_each_cell():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :1] = 1  # half of the top-left 2x2 cell
    assert resize_occlusion(target, (2, 2))[0, 0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert resize_occlusion(target, (4, 4)) is target


def test_orthogonality_loss_is_the_mean_squared_cosine_of_pooled_parts():
    identity = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).repeat(2, 1, 2, 2)
    mask = torch.stack([torch.tensor([0.0, 5.0]), torch.tensor([3.0, 3.0])]).view(2, 2, 1, 1)
    expected = (0.0 + (1 / math.sqrt(2)) ** 2) / 2
    assert orthogonality_loss(identity, mask).item() == pytest.approx(expected)


def test_gan_loss_label_conventions():
    scores = torch.tensor([0.5, 2.0])
    lsgan = GANLoss("lsgan")
    assert lsgan(scores, real=True).item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)
    assert lsgan(scores, real=False).item() == pytest.approx((0.25 + 4) / 2)
    hinge = GANLoss("hinge")
    assert hinge(scores, real=True, discriminator=True).item() == pytest.approx((0.5 + 0) / 2)
    assert hinge(scores, real=False, discriminator=True).item() == pytest.approx((1.5 + 3) / 2)
    assert hinge(scores, real=True).item() == pytest.approx(-1.25)
    with pytest.raises(ValueError, match="lsgan or hinge"):
        GANLoss("wgan")


def test_feature_matching_is_mean_l1_over_layers_with_the_real_side_detached():
    fake = [torch.ones(2, 3, requires_grad=True), torch.zeros(1, 4, requires_grad=True)]
    real = [torch.zeros(2, 3, requires_grad=True), torch.full((1, 4), 3.0, requires_grad=True)]
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx((1.0 + 3.0) / 2)
    loss.backward()
    assert all(r.grad is None for r in real) and all(f.grad is not None for f in fake)


def test_class_centres_are_normalised_so_their_norm_changes_nothing():
    margin = make_margin("arcface", scale=16.0, m2=0.3)
    head = MarginSoftmaxLoss(6, 8, margin, seed=1)
    with torch.no_grad():
        head.weight.mul_(torch.linspace(0.1, 50.0, 6)[:, None])  # centres of very different norms
    embeddings, labels = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 5])
    expected_cosine = F.normalize(embeddings) @ F.normalize(head.weight.detach()).T
    torch.testing.assert_close(head.cosine(embeddings), expected_cosine)
    expected = F.cross_entropy(margin(expected_cosine, labels), labels)
    torch.testing.assert_close(head(embeddings, labels), expected)


def test_single_process_sharded_head_equals_the_plain_head():
    margin = make_margin("cosface", scale=8.0, m3=0.2)
    plain, sharded = MarginSoftmaxLoss(7, 4, margin, seed=2), ShardedMarginSoftmaxLoss(7, 4, margin, seed=2)
    with torch.no_grad():
        plain.weight.mul_(torch.arange(1.0, 8.0)[:, None])
        sharded.weight.copy_(plain.weight)
    embeddings, labels = torch.randn(6, 4), torch.tensor([0, 6, 3, 3, 1, 2])
    torch.testing.assert_close(sharded(embeddings, labels), plain(embeddings, labels))
    assert torch.equal(sharded.full_weight(), plain.full_weight())
    centres = torch.randn(7, 4)
    sharded.load_full_weight(centres)
    assert torch.equal(sharded.full_weight(), centres)
    assert shard_bounds(10, 0, 3) == (0, 4) and shard_bounds(10, 2, 3) == (8, 10) and shard_bounds(2, 2, 3) == (2, 2)


def test_margin_kinds_use_their_own_parameters():
    arc = make_margin("arcface", 10.0, m1=2.0, m2=0.4, m3=0.3)
    assert (arc.scale, arc.m1, arc.m2, arc.m3) == (10.0, 1.0, 0.4, 0.0)
    cos = make_margin("cosface", 10.0, m1=2.0, m2=0.4, m3=0.3)
    assert (cos.scale, cos.m1, cos.m2, cos.m3) == (10.0, 1.0, 0.0, 0.3)
    combined = make_margin("combined", 10.0, m1=0.9, m2=0.4, m3=0.3)
    assert (combined.scale, combined.m1, combined.m2, combined.m3) == (10.0, 0.9, 0.4, 0.3)
    with pytest.raises(ValueError, match="unknown margin"):
        make_margin("sphere", 1.0)


def test_combined_margin_formula_and_fallback_past_pi():
    cosine = torch.tensor([[0.6, 0.1], [-0.95, 0.2]])
    out = CombinedMargin(2.0, 1.2, 0.3, 0.1)(cosine, torch.tensor([0, 0]))
    theta0 = math.acos(0.6)
    assert out[0, 0].item() == pytest.approx(2 * (math.cos(1.2 * theta0 + 0.3) - 0.1), rel=1e-5)
    # 1.2 * acos(-0.95) + 0.3 > pi: linear penalty cos - m2 sin m2 - (m1 - 1), then - m3
    fallback = -0.95 - 0.3 * math.sin(0.3) - 0.2 - 0.1
    assert out[1, 0].item() == pytest.approx(2 * fallback, rel=1e-5)
    assert out[:, 1].tolist() == pytest.approx([0.2, 0.4])


def _stage(steps):
    return StageConfig(name="s", steps=steps, train=["backbone"], losses=["recognition"])


def test_cosine_schedule_with_warmup():
    factor = lr_lambda(_stage(12), warmup=2, schedule="cosine")
    assert [factor(0), factor(1)] == pytest.approx([0.5, 1.0])
    assert factor(2) == pytest.approx(1.0)
    assert factor(7) == pytest.approx(0.5)  # half way through the 10 steps after warm-up
    assert factor(12) == pytest.approx(0.0, abs=1e-12) and factor(40) == pytest.approx(0.0, abs=1e-12)
    assert factor(4) > factor(5) > factor(6)
    constant = lr_lambda(_stage(12), warmup=0, schedule="constant")
    assert [constant(s) for s in (0, 6, 11)] == [1.0, 1.0, 1.0]


def test_a_closed_decoupling_module_leaves_the_features_almost_whole():
    from meer.models.decouple import MaskDecoupling

    module = MaskDecoupling(channels=16, prev_channels=8)
    module.start_closed()
    assert torch.count_nonzero(module.spatial_attention.weight) == 0
    assert torch.all(module.spatial_attention.bias == -4.0)
    x, prev = torch.randn(2, 16, 3, 3), torch.randn(2, 8, 6, 6)
    out = module(x, prev)
    assert out.attention.max() <= torch.sigmoid(torch.tensor(-4.0)) + 1e-6
    torch.testing.assert_close(out.identity, x, atol=0.02 * x.abs().max().item(), rtol=0)
    module.start_closed(bias=-1.0)
    assert torch.all(module.spatial_attention.bias == -1.0)


def test_distillation_distance_is_cosine_distance_to_a_detached_target():
    from meer.train.objectives import cosine_distance

    student = torch.tensor([[2.0, 0.0], [1.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [3.0, 3.0]], requires_grad=True)
    distance = cosine_distance(student, teacher)
    assert distance.item() == pytest.approx((1.0 + 0.0) / 2)
    distance.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_the_generator_reads_nothing_under_a_full_occlusion():
    from meer.models.generator import UnmaskGenerator

    generator = UnmaskGenerator(16, (4, 8, 12), width=4).eval()
    identity = torch.randn(1, 16, 2, 2)
    skips = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 12, 4, 4)]
    covered = torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        a = generator(identity, skips, torch.rand(1, 3, 32, 32), covered)
        b = generator(identity, [s * 5 for s in skips], torch.rand(1, 3, 32, 32), covered)
        c = generator(identity, skips, torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
    torch.testing.assert_close(a, b)  # skips and pixels gated off entirely
    assert not torch.allclose(a, c)


def test_unmask_returns_its_occlusion_and_a_float_region():
    from meer.models.meer import MEER

    # no growth nor feather: the region is the thresholded occlusion itself
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8, blend_dilate=0,
                 blend_feather=0).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = model(x)
        out = model.unmask(x, encoded)
        expected = model.occlusion_probability(encoded, 32)
    torch.testing.assert_close(out.occlusion, expected)
    assert out.region.dtype == x.dtype and torch.equal(out.region, (expected > model.occlusion_threshold).float())
    model.occlusion_threshold = float(expected.max())  # repainted only strictly above the threshold
    with torch.no_grad():
        assert model.unmask(x, encoded).region.sum() == 0
    without = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator=False)
    with pytest.raises(ValueError, match="^this model was built without a generator$"):
        without.unmask(x)
