"""Decoupling module, MEER network and layer behaviour found missing by mutation testing (issue #18)."""

import pytest
import torch
from torch import nn

from meer.models.decouple import MaskDecoupling


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
    with pytest.raises(ValueError, match="previous feature map"):
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
