"""The pixel-level occlusion refiner (meer.models.occlusion; issue 15, item 2)."""

import pytest
import torch
import torch.nn.functional as F

from meer.config import ModelConfig
from meer.models.meer import MEER, build_model
from meer.models.occlusion import OcclusionRefiner


def tiny_meer(**kwargs):
    torch.manual_seed(0)
    return MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8, **kwargs).eval()


def test_the_refiner_starts_as_the_coarse_map_and_then_corrects_it_pixel_by_pixel():
    refiner = OcclusionRefiner()
    images, coarse = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(refiner(images, coarse), coarse)
    torch.nn.init.normal_(refiner.out.weight)
    refined = refiner(images, coarse)
    assert refined.shape == (2, 1, 32, 32) and not torch.allclose(refined, coarse)
    # a correction read from the pixels: another image under the same coarse map moves it differently
    assert not torch.allclose(refined - coarse, refiner(-images, coarse) - coarse)


def test_a_model_with_a_refiner_composites_along_the_refined_map_but_feeds_its_generator_the_coarse_one():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain = tiny_meer()
    refined = tiny_meer(occlusion_refiner=True)
    refined.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        torch.nn.init.constant_(refined.occlusion_refiner.out.bias, 6.0)  # "all mask" wherever it looks
        encoded = refined(x)
        coarse = refined.occlusion_probability(encoded, 32)
        sharp = refined.occlusion_probability(encoded, 32, x)
        before, after = plain.unmask(x), refined.unmask(x)
    torch.testing.assert_close(coarse, plain.occlusion_probability(plain(x), 32))
    assert (sharp > 0.5).all() and not (coarse > 0.5).all()
    torch.testing.assert_close(after.raw, before.raw)  # the generator read the coarse map
    torch.testing.assert_close(after.occlusion, sharp)
    torch.testing.assert_close(after.restored, after.raw)  # repainted everywhere the refiner says
    assert not torch.allclose(before.restored, before.raw)


def test_the_model_config_builds_the_refiner_and_it_needs_the_decoupling_module():
    cfg = ModelConfig(backbone="iresnet18", width=0.125, input_size=32, embedding_dim=16, occlusion_refiner=True)
    assert isinstance(build_model(cfg).occlusion_refiner, OcclusionRefiner)
    assert build_model(ModelConfig(backbone="iresnet18", width=0.125, input_size=32)).occlusion_refiner is None
    with pytest.raises(ValueError, match="^the occlusion refiner needs the decoupling module's occlusion map$"):
        MEER("iresnet18", width=0.125, input_size=32, decouple=False, generator=False, occlusion_refiner=True)


def test_the_refiner_learns_a_sharp_edge_the_coarse_map_blurs():
    torch.manual_seed(0)
    # a bright square on a dark face; the coarse map knows only its blurred 8 px cells
    target = torch.zeros(16, 1, 32, 32)
    for i in range(16):
        top, left = 6 + i % 5, 5 + (i * 3) % 7
        target[i, :, top : top + 15, left : left + 17] = 1.0
    images = (target * 1.6 - 0.8).expand(-1, 3, -1, -1) + 0.05 * torch.randn(16, 3, 32, 32)
    coarse = F.interpolate(F.avg_pool2d(target, 8) * 8 - 4, size=(32, 32), mode="bilinear", align_corners=False)
    refiner = OcclusionRefiner(8)
    optimizer = torch.optim.Adam(refiner.parameters(), 3e-3)

    def iou(logits):
        predicted, true = logits > 0, target > 0.5
        return float((predicted & true).sum() / (predicted | true).sum())

    start = iou(refiner(images, coarse))
    for _ in range(150):
        loss = F.binary_cross_entropy_with_logits(refiner(images, coarse), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = iou(refiner(images, coarse))
    assert start < 0.85 and end > 0.97, (start, end)


def test_the_generator_reads_the_refined_map_when_told_to():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model = tiny_meer(occlusion_refiner=True, generator_occlusion="refined")
    with torch.no_grad():
        torch.nn.init.constant_(model.occlusion_refiner.out.bias, 6.0)
        encoded = model(x)
        sharp = model.occlusion_probability(encoded, 32, x)
        expected = model.generator(encoded.identity, encoded.maps[:3], x, sharp)
        torch.testing.assert_close(model.unmask(x).raw, expected)
        coarse = model.generator(encoded.identity, encoded.maps[:3], x, model.occlusion_probability(encoded, 32))
    assert not torch.allclose(expected, coarse)
    with pytest.raises(ValueError, match="^generator_occlusion must be coarse or refined, got 'fine'$"):
        tiny_meer(generator_occlusion="fine")
    with pytest.raises(ValueError, match="^model.generator_occlusion must be coarse or refined, got 'fine'$"):
        ModelConfig(generator_occlusion="fine")


def test_the_refined_map_needs_a_refiner():
    # no silent fall-back to the coarse map: the generator would read what it never learned with
    with pytest.raises(ValueError, match=r"^generator_occlusion refined needs the occlusion refiner \(occlusion_refiner=True\)$"):
        tiny_meer(generator_occlusion="refined")
    with pytest.raises(ValueError, match="^model.generator_occlusion refined needs model.occlusion_refiner: true$"):
        ModelConfig(generator_occlusion="refined")
    assert ModelConfig(generator_occlusion="refined", occlusion_refiner=True).generator_occlusion == "refined"


def test_a_refiner_model_whose_generator_reads_the_coarse_map():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model = tiny_meer(occlusion_refiner=True)
    with torch.no_grad():
        torch.nn.init.constant_(model.occlusion_refiner.out.bias, 6.0)
        encoded = model(x)
        coarse = model.occlusion_probability(encoded, 32)
        unmasked = model.unmask(x, encoded)
        torch.testing.assert_close(unmasked.raw, model.generator(encoded.identity, encoded.maps[:3], x, coarse))
        # the composite still follows the refined map
        torch.testing.assert_close(unmasked.occlusion, model.occlusion_probability(encoded, 32, x))
    assert not torch.allclose(unmasked.occlusion, coarse)
