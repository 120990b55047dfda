"""Decoupling module, MEER network and layer behaviour found missing by mutation testing (issue #18)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meer.models.decouple import MaskDecoupling
from meer.models.meer import MEER


def probe(cin: int, channel: int, scale: float = 1.0) -> nn.Conv2d:
    """A 1x1 convolution that outputs ``scale`` times input channel ``channel``."""
    conv = nn.Conv2d(cin, 1, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, channel] = scale
    return conv


def centre_tap(channel: int, scale: float = 1.0, bias: float = 0.0) -> nn.Conv2d:
    """The spatial attention's 7x7 convolution reading only the centre of one input channel."""
    conv = nn.Conv2d(3, 1, 7, padding=3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(bias)
        conv.weight[0, channel, 3, 3] = scale
    return conv


class Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], x.shape[1], 1, 1), self.value)


def test_the_occlusion_head_reads_the_previous_map_then_the_last_map_upsampled_bilinearly():
    module = MaskDecoupling(channels=2, prev_channels=3).eval()
    x = torch.tensor([[[[1.0, 5.0], [1.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # [1, 2, 2, 2]
    prev = torch.arange(48.0).view(1, 3, 4, 4)
    module.occlusion_head = probe(5, 3)  # channel 3 = the first channel of the upsampled x
    row = module(x, prev).occlusion_logits[0, 0, 0]
    # half-pixel-centred bilinear interpolation of [1, 5] to 4 samples
    assert row.tolist() == pytest.approx([1.0, 2.0, 4.0, 5.0])
    module.occlusion_head = probe(5, 1)  # channel 1 = the previous map's second channel
    torch.testing.assert_close(module(x, prev).occlusion_logits[0, 0], prev[0, 1])


def test_a_module_built_for_the_previous_map_refuses_to_run_without_it():
    module = MaskDecoupling(channels=4, prev_channels=2)
    with pytest.raises(ValueError, match="^this MaskDecoupling was built to read the previous feature map$"):
        module(torch.randn(1, 4, 2, 2))


def spatial_attention_from(module: MaskDecoupling, x, prev=None, channel=0, scale=1.0):
    """The attention when only the spatial branch's input ``channel`` counts (channel branch open)."""
    module.channel_attention = Constant(50.0)  # sigmoid(50) = 1
    module.spatial_attention = centre_tap(channel, scale)
    return module(x, prev).attention


def test_spatial_attention_reads_the_channel_mean_the_channel_max_and_the_predicted_occlusion():
    module = MaskDecoupling(channels=3, prev_channels=None).eval()
    x = torch.tensor([[[[0.0, 3.0]], [[3.0, -6.0]], [[-3.0, 0.3]]]])  # [1, 3, 1, 2]
    mean = spatial_attention_from(module, x, channel=0)
    torch.testing.assert_close(mean[0, 0, 0], torch.sigmoid(torch.tensor([0.0, -0.9])))
    biggest = spatial_attention_from(module, x, channel=1)
    torch.testing.assert_close(biggest[0, 0, 0], torch.sigmoid(torch.tensor([3.0, 3.0])))
    module.occlusion_head = probe(3, 0, scale=2.0)  # occlusion logit = 2 * the first channel
    occlusion = spatial_attention_from(module, x, channel=2)
    expected = torch.sigmoid(torch.sigmoid(torch.tensor([0.0, 6.0])))
    torch.testing.assert_close(occlusion[0, 0, 0], expected)
    assert torch.equal(occlusion[0, 0], occlusion[0, 1]) and torch.equal(occlusion[0, 1], occlusion[0, 2])


def test_the_occlusion_read_by_the_attention_is_averaged_down_to_the_last_map():
    module = MaskDecoupling(channels=2, prev_channels=1).eval()
    prev = torch.tensor([[[[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, -9.0]]]])  # [1, 1, 2, 4]
    x = torch.zeros(1, 2, 1, 2)
    module.occlusion_head = probe(3, 0)  # the occlusion logit is the previous map
    attention = spatial_attention_from(module, x, prev, channel=2)
    p = torch.sigmoid(torch.tensor([0.0, 9.0, -9.0]))
    expected = torch.sigmoid(torch.stack([p[0], (3 * p[1] + p[2]) / 4]))
    torch.testing.assert_close(attention[0, 0, 0], expected)


def test_the_mask_head_reads_the_pooled_mask_part_and_the_adversary_the_pooled_identity_part():
    module = MaskDecoupling(channels=4, num_mask_types=4, grl_strength=0.3).eval()
    module.mask_head = nn.Identity()
    module.adversary = nn.Identity()
    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = module(x)
    torch.testing.assert_close(out.mask_logits, out.mask.mean((2, 3)))
    torch.testing.assert_close(out.adversary_logits, out.identity.mean((2, 3)))
    # the adversary's gradient reaches the identity part reversed and scaled by grl_strength
    identity = out.identity
    identity.retain_grad()
    weights = torch.randn(2, 4)
    (out.adversary_logits * weights).sum().backward()
    torch.testing.assert_close(identity.grad, (-0.3 * weights / 15)[:, :, None, None].expand(2, 4, 3, 5))


def test_attention_is_the_product_of_the_channel_and_the_spatial_gate():
    module = MaskDecoupling(channels=2).eval()
    module.channel_attention = Constant(0.0)  # sigmoid(0) = 0.5
    module.spatial_attention = centre_tap(0, scale=0.0, bias=-1.0)
    x = torch.randn(1, 2, 2, 2)
    out = module(x)
    gate = 0.5 * torch.sigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(out.attention, gate.expand(1, 2, 2, 2))
    torch.testing.assert_close(out.mask, gate * x)
    torch.testing.assert_close(out.identity, (1 - gate) * x)


# ---------------------------------------------------------------- layers

def test_gradient_reversal_defaults_to_a_plain_flip_and_passes_the_values_through():
    from meer.models.layers import grad_reverse

    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.0, -2.0, -3.0]))
    x.grad = None
    (grad_reverse(x, 0.25) * 4).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -1.0))


def test_conv_bn_act_keeps_the_size_halves_it_with_stride_two_and_ends_in_a_per_channel_prelu():
    from meer.models.layers import conv_bn_act

    x = torch.randn(2, 4, 8, 8)
    for kernel in (1, 3, 5):
        assert conv_bn_act(4, 6, kernel)(x).shape == (2, 6, 8, 8)
    block = conv_bn_act(4, 6, stride=2)
    assert block(x).shape == (2, 6, 4, 4)
    conv, norm, act = block
    assert conv.kernel_size == (3, 3) and conv.bias is None  # the BatchNorm's shift is the bias
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 6
    assert isinstance(act, nn.PReLU) and act.num_parameters == 6
    relu = nn.ReLU()
    assert conv_bn_act(4, 6, act=relu)[2] is relu


# ---------------------------------------------------------------- MEER

def tiny_meer(**kwargs):
    torch.manual_seed(0)
    return MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8, **kwargs).eval()



def test_the_embedding_is_read_from_the_identity_part_or_the_last_map_without_decoupling():
    x = torch.randn(2, 3, 32, 32)
    model = tiny_meer()
    with torch.no_grad():
        encoded = model(x)
        maps = model.backbone.forward_features(x)
        assert len(encoded.maps) == 4 and all(torch.equal(a, b) for a, b in zip(encoded.maps, maps))
        decoupled = model.decouple(maps[3], maps[2])
        torch.testing.assert_close(encoded.identity, decoupled.identity)
        torch.testing.assert_close(encoded.embedding, model.backbone.head(decoupled.identity))
        torch.testing.assert_close(encoded.decoupled.occlusion_logits, decoupled.occlusion_logits)
    plain = tiny_meer(decouple=False, generator=False)
    with torch.no_grad():
        encoded = plain(x)
        last = plain.backbone.forward_features(x)[3]
        assert encoded.decoupled is None and torch.equal(encoded.identity, last)
        torch.testing.assert_close(encoded.embedding, plain.backbone.head(last))


def test_flip_averaged_embeddings_are_unit_norm_and_the_same_for_a_face_and_its_mirror():
    model = tiny_meer()
    x = torch.randn(3, 3, 32, 32)
    plain = model.embed(x)
    torch.testing.assert_close(plain, F.normalize(model(x).embedding))
    both = model.embed(x, flip=True)
    torch.testing.assert_close(both.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(both, model.embed(torch.flip(x, dims=[3]), flip=True), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both, plain, atol=1e-3)
    expected = F.normalize(model(x).embedding + model(torch.flip(x, dims=[3])).embedding)
    torch.testing.assert_close(both, expected.detach())


def test_the_occlusion_probability_is_the_logit_map_upsampled_bilinearly_then_squashed():
    from meer.models.decouple import DecoupleOutput
    from meer.models.meer import Encoded

    logits = torch.tensor([[[[-2.0, 2.0], [-2.0, 2.0]]]])
    unused = torch.zeros(1)
    encoded = Encoded([], unused, unused, DecoupleOutput(unused, unused, unused, logits, unused, unused))
    probability = tiny_meer().occlusion_probability(encoded, 4)
    assert probability.shape == (1, 1, 4, 4)
    expected = torch.sigmoid(torch.tensor([-2.0, -1.0, 1.0, 2.0]))
    torch.testing.assert_close(probability[0, 0], expected.expand(4, 4))
    with pytest.raises(ValueError, match="^this model has no decoupling module, so it predicts no occlusion$"):
        tiny_meer(decouple=False, generator=False).occlusion_probability(Encoded([], unused, unused, None), 4)


def test_build_model_builds_the_network_the_model_config_describes():
    from meer.config import ModelConfig
    from meer.models.meer import build_model

    cfg = ModelConfig(backbone="iresnet18", width=0.25, input_size=48, embedding_dim=24, dropout=0.3,
                      decouple_prev=False, attention_reduction=2, num_mask_types=3, generator_width=6,
                      occlusion_threshold=0.3, grl_strength=0.7)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 48, 48)
    encoded = model(x)
    assert encoded.embedding.shape == (2, 24) and encoded.decoupled.mask_logits.shape == (2, 3)
    assert model.input_size == 48 and model.occlusion_threshold == 0.3
    channels = model.backbone.channels
    assert channels[3] == 128  # width 0.25 of 512
    decouple = model.decouple
    assert not decouple.use_prev and decouple.grl_strength == 0.7
    assert decouple.channel_attention[1].out_channels == channels[3] // 2  # reduction 2
    assert model.backbone.head.dropout.p == 0.3
    assert model.generator.to_rgb.in_channels == 6
    assert model.unmask(x, encoded).raw.shape == x.shape
    assert build_model(dataclasses.replace(cfg, grl_strength=1.0)).decouple.grl_strength == 1.0
    plain = build_model(ModelConfig(backbone="iresnet18", width=0.125, input_size=32, decouple=False, generator=False))
    assert plain.decouple is None and plain.generator is None


def test_the_generator_upsamples_with_half_pixel_centres_before_reading_the_skip():
    from meer.models.generator import UpBlock

    block = UpBlock(cin=1, cskip=1, cout=1)
    block.body = nn.Identity()  # what reaches the convolutions
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    skip = torch.full((1, 1, 4, 4), 7.0)
    out = block(x, skip)
    # half-pixel centres: the first row of a 2 -> 4 upsampling of [0, 1] is [0, 0.25, 0.75, 1]
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.equal(out[:, 1:], skip)


def test_the_gated_decoder_upsamples_with_half_pixel_centres_and_adds_its_refinement():
    from meer.models.generator import GatedGenerator, GatedUpBlock

    block = GatedUpBlock(cin=1, cskip=1, cout=1)
    block.body = nn.Identity()
    out = block(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))

    gen = GatedGenerator(identity_channels=8, skip_channels=(4, 4, 4), width=4).eval()
    gen.refine = nn.Identity()  # the refinement is added: x + x
    features = []
    gen.up1.register_forward_hook(lambda module, args, out: features.append(out))
    skips = [torch.randn(1, 4, s, s) for s in (8, 4, 2)]
    with torch.no_grad():
        raw = gen(torch.randn(1, 8, 1, 1), skips, torch.randn(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
        assert torch.allclose(raw, torch.tanh(gen.to_rgb(2 * features[0])))


def test_an_unknown_generator_is_refused_with_the_known_ones_named():
    from meer.models.generator import create_generator

    with pytest.raises(ValueError, match=r"^unknown generator 'unet'; choose from skip, gated, gated-encoder$"):
        create_generator("unet", 8, (4, 4, 4), 4)


def test_a_feather_of_one_pixel_already_ramps_the_edge():
    from meer.models.generator import blend_weights

    region = torch.zeros(1, 1, 9, 9)
    region[..., 4, 4] = 1
    weights = blend_weights(region, feather=1)
    assert weights[0, 0, 4, 4] == 1 and 0 < weights[0, 0, 4, 3] < 1 and 0 < weights[0, 0, 4, 2] < 1
    assert weights[0, 0, 4, 1] == 0 and weights[0, 0, 0, 0] == 0  # beyond 2 * feather pixels
