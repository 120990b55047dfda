"""Shape, finiteness and gradient checks over every registered backbone, and MEER's invariants."""

import math

import pytest
import torch

from meer.models.backbones import LAYERS, create_iresnet
from meer.models.decouple import MaskDecoupling
from meer.models.generator import (
    GENERATORS,
    EncodedGatedGenerator,
    GatedGenerator,
    blend_weights,
    composite,
)
from meer.models.heads import CombinedMargin, MarginSoftmaxLoss, make_margin
from meer.models.layers import grad_reverse, upsample
from meer.models.meer import MEER


def test_upsample_is_bilinear_interpolation_in_the_input_s_layout():
    import torch.nn.functional as F

    big = torch.randn(8, 64, 56, 56)  # the generator's last decoder: equal to the last bit or so
    torch.testing.assert_close(upsample(big, (112, 112)), F.interpolate(big, size=(112, 112), mode="bilinear"),
                               rtol=0, atol=1e-6)
    x = torch.randn(4, 64, 7, 7, requires_grad=True)  # the decoupling module's: bit for bit
    reference = F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False)
    out = upsample(x, (14, 14))
    assert torch.equal(out, reference) and out.is_contiguous()
    last = upsample(x.contiguous(memory_format=torch.channels_last), (13, 15))
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert torch.equal(last, F.interpolate(x, size=(13, 15), mode="bilinear", align_corners=False))
    grad = torch.randn_like(out)
    (mine,) = torch.autograd.grad(out, x, grad)
    (theirs,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backbone_shapes_and_gradients(name):
    model = create_iresnet(name, width=0.125, input_size=32, embedding_dim=16)
    x = torch.randn(2, 3, 32, 32)
    maps = model.forward_features(x)
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]
    assert [m.shape[1] for m in maps] == list(model.channels)
    out = model(x)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_width_multiplier_scales_channels():
    assert create_iresnet("iresnet18", width=0.5, input_size=32).channels == (32, 64, 128, 256)
    with pytest.raises(ValueError, match="multiple of 16"):
        create_iresnet("iresnet18", input_size=40)


def test_full_meer_every_parameter_gets_a_gradient():
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8)
    x = torch.randn(3, 3, 32, 32)
    encoded = model(x)
    unmasked = model.unmask(x, encoded)
    d = encoded.decoupled
    loss = (encoded.embedding.square().sum() + unmasked.raw.square().sum() + d.occlusion_logits.sum()
            + d.mask_logits.square().sum() + d.adversary_logits.square().sum())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert unmasked.restored.shape == x.shape and torch.isfinite(unmasked.restored).all()


def test_gradient_reversal_flips_the_sign():
    x = torch.randn(4, 5, requires_grad=True)
    (grad_reverse(x, 0.7) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(5.0).expand(4, 5))
    y = torch.randn(3, requires_grad=True)
    assert torch.equal(grad_reverse(y, 1.0), y)


def test_decoupling_splits_features_exactly():
    module = MaskDecoupling(channels=16, prev_channels=8, num_mask_types=4)
    x, prev = torch.randn(2, 16, 3, 3), torch.randn(2, 8, 6, 6)
    out = module(x, prev)
    assert torch.allclose(out.identity + out.mask, x, atol=1e-6)
    assert out.attention.min() >= 0 and out.attention.max() <= 1
    assert out.occlusion_logits.shape == (2, 1, 6, 6)
    assert out.mask_logits.shape == out.adversary_logits.shape == (2, 4)


def test_adversary_gradient_is_reversed_into_the_features():
    """The decoupling classifier's loss pushes x (through x_id) opposite to plain descent."""
    module = MaskDecoupling(channels=8, num_mask_types=3, grl_strength=1.0)
    x = torch.randn(2, 8, 2, 2, requires_grad=True)
    out = module(x)
    out.adversary_logits.sum().backward()
    reversed_grad = x.grad.clone()
    x.grad = None
    module.grl_strength = -1.0  # a "reversal" of -1 is the ordinary gradient
    module(x).adversary_logits.sum().backward()
    assert torch.allclose(reversed_grad, -x.grad, atol=1e-6)


def test_composite_keeps_visible_pixels_exactly():
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    restored = torch.rand(2, 3, 16, 16) * 2 - 1
    region = torch.zeros(2, 1, 16, 16)
    region[:, :, 8:] = 1
    out = composite(restored, image, region)
    assert torch.equal(out[:, :, :8], image[:, :, :8])
    assert torch.equal(out[:, :, 8:], restored[:, :, 8:])


def test_unmask_output_equals_input_outside_predicted_region():
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model.unmask(x)
    keep = out.region.expand_as(x) == 0
    assert keep.any()
    assert torch.equal(out.restored[keep], x[keep])


def test_arcface_logits_match_the_formula():
    cosine = torch.tensor([[0.5, 0.2, -0.1], [0.9, 0.3, 0.1]])
    labels = torch.tensor([0, 2])
    logits = make_margin("arcface", scale=10.0, m2=0.5)(cosine, labels)
    expected = 10 * cosine.clone()
    expected[0, 0] = 10 * math.cos(math.acos(0.5) + 0.5)
    expected[1, 2] = 10 * math.cos(math.acos(0.1) + 0.5)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_cosface_logits_match_the_formula():
    cosine = torch.tensor([[0.5, 0.2], [0.4, 0.8]])
    logits = make_margin("cosface", scale=30.0, m3=0.35)(cosine, torch.tensor([1, 0]))
    expected = torch.tensor([[0.5, 0.2 - 0.35], [0.4 - 0.35, 0.8]]) * 30
    assert torch.allclose(logits, expected, atol=1e-5)


def test_zero_margin_gives_scaled_cosine_and_arcface_past_pi_stays_monotone():
    cosine = torch.tensor([[0.3, -0.2]])
    assert torch.allclose(CombinedMargin(8.0, 1.0, 0.0, 0.0)(cosine, torch.tensor([0])), 8 * cosine)
    # theta + m > pi: the fallback is cos(theta) - m*sin(m), still below the plain cosine.
    near_pi = torch.tensor([[-0.99]])
    out = CombinedMargin(1.0, 1.0, 0.5, 0.0)(near_pi, torch.tensor([0]))
    assert torch.allclose(out, near_pi - 0.5 * math.sin(0.5))


def test_ignored_labels_get_no_margin():
    cosine = torch.tensor([[0.5, 0.2]])
    assert torch.allclose(make_margin("arcface", 2.0)(cosine, torch.tensor([-1])), 2 * cosine)


def test_margin_softmax_loss_is_cross_entropy_of_margin_logits():
    margin = make_margin("cosface", scale=16.0, m3=0.2)
    loss_fn = MarginSoftmaxLoss(5, 8, margin)
    embeddings, labels = torch.randn(3, 8) * 10, torch.tensor([0, 4, 2])
    cos = loss_fn.cosine(embeddings)
    assert cos.shape == (3, 5) and cos.abs().max() <= 1 + 1e-6
    expected = torch.nn.functional.cross_entropy(margin(cos, labels), labels)
    assert torch.allclose(loss_fn(embeddings, labels), expected)


def test_centre_initialisation_does_not_depend_on_sharding():
    from meer.models.heads import init_centres

    full = init_centres(0, 9000, 4, seed=5)
    shards = [init_centres(a, b, 4, seed=5) for a, b in [(0, 3000), (3000, 8191), (8191, 9000)]]
    assert torch.equal(torch.cat(shards), full)
    assert not torch.equal(init_centres(0, 10, 4, seed=6), full[:10])


@pytest.mark.parametrize("arch", sorted(GENERATORS))
def test_every_generator_restores_at_full_size_with_a_gradient_for_every_weight(arch):
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8, generator_arch=arch)
    for conv in getattr(model.generator, "inject", []):  # zero at the start: no gradient reaches the encoder
        torch.nn.init.normal_(conv.weight)
    x = torch.randn(2, 3, 32, 32)
    unmasked = model.unmask(x)
    assert unmasked.raw.shape == x.shape and unmasked.raw.abs().max() <= 1
    unmasked.raw.square().sum().backward()
    missing = [n for n, p in model.generator.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing
    with pytest.raises(ValueError, match="unknown generator 'unet'"):
        MEER("iresnet18", width=0.125, input_size=32, generator_arch="unet")


@pytest.mark.parametrize("cls", [GatedGenerator, EncodedGatedGenerator])
def test_gated_generator_reads_no_pixel_under_the_occlusion(cls):
    torch.manual_seed(0)
    generator = cls(16, (4, 8, 8), width=4).eval()
    for conv in getattr(generator, "inject", []):  # they start at zero: make the encoder count
        torch.nn.init.normal_(conv.weight)
    identity = torch.randn(1, 16, 2, 2)
    skips = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    image = torch.rand(1, 3, 32, 32)
    occlusion = torch.zeros(1, 1, 32, 32)
    occlusion[..., 16:, :] = 1
    other = image.clone()
    other[..., 16:, :] = torch.rand(1, 3, 16, 32)
    with torch.no_grad():
        a = generator(identity, skips, image, occlusion)
        b = generator(identity, skips, other, occlusion)
        c = generator(identity, skips, other, torch.zeros_like(occlusion))
    torch.testing.assert_close(a, b)  # the hidden pixels are gated off
    assert not torch.allclose(b, c)


def test_blend_weights_grow_then_ramp_to_zero():
    region = torch.zeros(1, 1, 24, 24)
    region[..., 12:, 6:18] = 1  # runs off the bottom of the image
    assert torch.equal(blend_weights(region), region)
    column = blend_weights(region, dilate=1, feather=2)[0, 0, :, 12]
    # grown by 1 px (rows 11..), then 1 - k/5 for k = 1..4 px further out, then exactly 0
    torch.testing.assert_close(column[:11], torch.tensor([0.0] * 7 + [0.2, 0.4, 0.6, 0.8]))
    assert (column[11:] == 1).all()  # 1 on the grown region, down to the image's border
    weights = blend_weights(region, dilate=1, feather=2)
    assert weights.min() == 0 and weights.max() == 1
    assert (weights[..., :7, :] == 0).all() and (weights[..., :, :1] == 0).all()


def test_feathered_unmask_blends_near_the_region_and_keeps_far_pixels():
    torch.manual_seed(0)
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8,
                 blend_dilate=1, blend_feather=2).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = model(x)
        probability = model.occlusion_probability(encoded, 32)
        model.occlusion_threshold = float(probability.quantile(0.8))  # a region of about a fifth of the face
        out = model.unmask(x, encoded)
        hard = (probability > model.occlusion_threshold).float()
    torch.testing.assert_close(out.region, blend_weights(hard, 1, 2))
    keep = (out.region == 0).expand_as(x)
    full = (out.region == 1).expand_as(x)
    part = ((out.region > 0) & (out.region < 1)).expand_as(x)
    assert keep.any() and full.any() and part.any()
    assert torch.equal(out.restored[keep], x[keep])
    assert torch.equal(out.restored[full], out.raw[full])
    a = out.region.expand_as(x)[part]
    torch.testing.assert_close(out.restored[part], a * out.raw[part] + (1 - a) * x[part])


def test_flipped_unmask_averages_the_mirrored_restoration_mirrored_back():
    torch.manual_seed(0)
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        plain, mirrored = model.unmask(x), model.unmask(torch.flip(x, dims=[3]))
        both = model.unmask(x, flip=True)
    torch.testing.assert_close(both.raw, (plain.raw + torch.flip(mirrored.raw, dims=[3])) / 2)
    torch.testing.assert_close(both.occlusion, (plain.occlusion + torch.flip(mirrored.occlusion, dims=[3])) / 2)
    assert not torch.allclose(both.raw, plain.raw)  # an untrained generator is not mirror-symmetric
    keep = both.region.expand_as(x) == 0
    assert torch.equal(both.restored[keep], x[keep])


def test_composite_blends_by_weight():
    image, restored = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    region = torch.tensor([[[[0.0, 0.25], [1.0, 0.5]]]])
    torch.testing.assert_close(composite(restored, image, region)[0, 0], torch.tensor([[0.0, 0.25], [1.0, 0.5]]))
    broken = torch.full_like(restored, float("nan"))  # a diverged generator cannot touch the far pixels
    assert torch.equal(composite(broken, image, region)[0, :, 0, 0], image[0, :, 0, 0])
