"""The pure pieces of issue 15's bench scripts: the pre-training's config, schedule and edge loss, and the
unmasking table's grouping by mask kind."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import their siblings by name

import pretrain_generator  # noqa: E402
import unmask_quality  # noqa: E402


def test_pretrain_config_loads_with_overrides_and_rejects_unknown_keys():
    path = str(BENCH / "configs" / "pretrain" / "generator.yaml")
    cfg = pretrain_generator.load_pretrain_config(path, ["steps=40", "mask_types=[surgical]"])
    assert cfg.steps == 40 and cfg.mask_types == ["surgical"] and cfg.generator_arch == "gated"
    assert "cloth" not in pretrain_generator.load_pretrain_config(path, []).mask_types  # held out
    real = pretrain_generator.load_pretrain_config(path, ["real_masks=cut.safetensors", "real_mask_share=0.5"])
    assert (real.real_masks, real.real_mask_share) == ("cut.safetensors", 0.5)
    assert pretrain_generator.load_pretrain_config(path, []).real_masks == ""  # drawn masks only by default
    with pytest.raises(ValueError, match="unknown config key stepz"):
        pretrain_generator.load_pretrain_config(path, ["stepz=3"])


def test_learning_rate_warms_up_then_follows_a_cosine_to_its_floor():
    cfg = pretrain_generator.PretrainConfig(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    lr = [pretrain_generator.lr_at(cfg, step) for step in range(120)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0) and lr[60] == pytest.approx(0.55)
    assert lr[110] == pytest.approx(0.1) and lr[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_a_warm_started_run_warms_up_again_then_rejoins_the_cosine():
    fresh = pretrain_generator.PretrainConfig(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    warm = pretrain_generator.PretrainConfig(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1, init_step=50)
    assert pretrain_generator.lr_at(warm, 50) == pytest.approx(0.1 * pretrain_generator.lr_at(fresh, 50))
    assert pretrain_generator.lr_at(warm, 54) == pytest.approx(0.5 * pretrain_generator.lr_at(fresh, 54))
    for step in (59, 60, 100, 115):
        assert pretrain_generator.lr_at(warm, step) == pytest.approx(pretrain_generator.lr_at(fresh, step))


def test_a_later_cosine_start_holds_the_rate_until_then_and_still_ends_at_the_floor():
    cfg = pretrain_generator.PretrainConfig(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1, cosine_start=50)
    lr = [pretrain_generator.lr_at(cfg, step) for step in range(120)]
    assert lr[10] == lr[60] == pytest.approx(1.0) and lr[85] == pytest.approx(0.55)
    assert lr[110] == pytest.approx(0.1) and all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_squared_error_enters_the_loss_only_when_weighted():
    repo = BENCH.parent
    cfg = pretrain_generator.PretrainConfig(base_model=str(repo / "src" / "meer" / "default_model"), pix=0.0, mse=1.0)
    restorer = pretrain_generator.Restorer(cfg)
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 112, 112, generator=generator) * 2 - 1
    occlusion = torch.zeros(2, 1, 112, 112)
    occlusion[..., 60:, 20:92] = 1.0
    batch = {"clean": clean, "masked": torch.where(occlusion > 0, torch.zeros_like(clean), clean),
             "occlusion": occlusion}
    total, parts = restorer.losses(batch)
    assert parts["mse"] > 0 and parts["pix"] > 0  # pix is computed (and logged) even at weight 0
    assert float(total) == pytest.approx(parts["mse"] + parts["pix_raw"], rel=1e-5)  # pix weighted 0
    restorer.cfg = pretrain_generator.PretrainConfig(base_model=cfg.base_model)
    assert "mse" not in restorer.losses(batch)[1]


def test_table_groups_by_mask_kind_and_marks_the_held_out_one():
    kinds = np.array([1, 1, 3, 3])  # surgical, surgical, cloth, cloth
    per_face = {"psnr": np.array([10.0, 20.0, 30.0, 50.0]), "id": np.array([0.5, 0.7, 0.9, 0.9])}
    rows = unmask_quality.summarise("m", per_face, np.array([0.5, 0.5, 0.8, 0.6]), kinds, {"cloth"})
    assert [r["masks"] for r in rows] == ["all", "surgical", "cloth (held out)"]  # no n95 face: no row
    assert rows[0]["psnr"] == 27.5 and rows[1]["psnr"] == 15.0 and rows[2]["faces"] == 2
    assert rows[1]["id_gain"] == pytest.approx(0.1) and rows[2]["id_gain"] == pytest.approx(0.2)
    assert list(unmask_quality.grid_faces(np.array([0, 1, 0, 2, 3, 0]), 2)) == [1, 4]
    real = unmask_quality.summarise("m", per_face, np.array([0.5, 0.5, 0.8, 0.6]), np.array([4, 4, 1, 1]), set())
    assert [(r["masks"], r["faces"], r["psnr"]) for r in real] == [("all", 4, 27.5), ("surgical", 2, 40.0),
                                                                    ("real", 2, 15.0)]


def test_blurred_truth_blurs_the_clean_face_inside_the_region_and_keeps_the_masked_one_outside():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    masked = np.full_like(clean, 7)
    region = np.zeros((2, 16, 16), np.uint8)
    region[:, 8:] = 1
    out = unmask_quality.blurred_truth(clean, masked, region, 2.0)
    assert (out[:, :8] == 7).all()  # outside: the masked face
    inside = out[:, 8:].astype(float)
    assert abs(inside.mean() - clean[:, 8:].mean()) < 20 and inside.std() < 0.5 * clean[:, 8:].std()  # smoothed truth


def test_telea_regions_grow_like_the_composite_by_chessboard_distance():
    found = np.zeros((2, 9, 9), bool)
    found[0, 4, 4] = True  # the second face: nothing found, nothing grown
    grown = unmask_quality.grown_regions(found, 2)
    assert grown.dtype == bool and grown.shape == found.shape
    assert grown[0, 2:7, 2:7].all() and grown[0].sum() == 25 and not grown[1].any()
    assert (unmask_quality.grown_regions(found, 0) == found).all()


def test_sobel_gives_each_channels_x_and_y_gradient_with_replicated_edges():
    images = torch.zeros(1, 3, 5, 5)
    images[:, 1, :, 3:] = 1.0  # a vertical step in the green channel
    grad = pretrain_generator.sobel(images)
    assert grad.shape == (1, 6, 5, 5)
    torch.testing.assert_close(grad[0, 2], torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]] * 5))  # green, x
    assert not grad[0, [0, 1, 3, 4, 5]].any()  # red, blue and every y gradient: flat


def test_ssim_map_matches_skimage_away_from_the_edges():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    clean = rng.uniform(-1, 1, (2, 3, 24, 24)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.3, clean.shape), -1, 1).astype(np.float32)
    ours = pretrain_generator.ssim_map(torch.from_numpy(noisy), torch.from_numpy(clean)).numpy()
    for i in range(2):
        _, theirs = structural_similarity(clean[i], noisy[i], data_range=2.0, channel_axis=0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, full=True)
        np.testing.assert_allclose(ours[i, :, 5:-5, 5:-5], theirs[:, 5:-5, 5:-5], atol=1e-4)  # edges: padding differs
    assert 0.0 < ours.mean() < 0.9
    identical = pretrain_generator.ssim_map(torch.from_numpy(clean), torch.from_numpy(clean))
    torch.testing.assert_close(identical, torch.ones_like(identical))


def test_gradient_excess_is_the_benchmarks_boundary_measure_and_has_a_gradient():
    from meer.eval.synthesis import boundary_excess

    rng = np.random.default_rng(0)
    clean = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    restored = np.clip(clean + rng.normal(0, 0.4, clean.shape), -1, 1).astype(np.float32)
    region = np.zeros((2, 1, 32, 32), np.float32)
    region[:, :, 12:24, 8:26] = 1.0  # its band (3 px either side) stays 2 px off the image's edges
    restored_t = torch.from_numpy(restored).requires_grad_(True)
    ours = pretrain_generator.gradient_excess(restored_t, torch.from_numpy(clean), torch.from_numpy(region))
    to_uint = lambda x: np.round((x.transpose(0, 2, 3, 1) + 1) * 127.5).astype(np.uint8)  # noqa: E731
    theirs = boundary_excess(to_uint(restored), to_uint(clean), region[:, 0]) * 255
    assert float(ours.detach()) == pytest.approx(theirs.mean(), rel=0.02)  # the uint8 rounding differs
    ours.backward()
    assert restored_t.grad[:, :, :6].abs().sum() == 0  # rows 3+ px off the band take no part
    assert restored_t.grad[:, :, 10:14].abs().sum() > 0
    same = torch.from_numpy(clean)
    assert float(pretrain_generator.gradient_excess(same, same, torch.from_numpy(region))) == 0.0


def test_fit_mask_head_separates_classes_and_rates_count_masked_calls():
    import fit_mask_head

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 100.0], [0.0, 5.0, 100.0], [-5.0, -5.0, 101.0]])  # unscaled columns
    labels = torch.arange(3).repeat_interleave(40)
    features = centres[labels] + torch.randn(120, 3, generator=g)
    head = fit_mask_head.fit_head(features, labels, 3, steps=200)
    with torch.no_grad():
        assert (head(features).argmax(1) == labels).float().mean() > 0.95
    rates = fit_mask_head.rates(np.array([0, 2, 0, 1]), np.array([False, True, True, False]))
    assert rates == {"masked found %": 50.0, "bare called masked %": 50.0}


def test_other_photos_are_the_same_person_elsewhere_and_another_person():
    labels = np.array([0, 0, 1, 2, 2, 2])
    same, other = unmask_quality.other_photos(labels, np.array([0, 2, 3, 5]), np.random.default_rng(0))
    assert same[0] == 1 and same[1] == -1 and same[2] in (4, 5) and same[3] in (3, 4)
    assert all(labels[o] != labels[r] for o, r in zip(other, [0, 2, 3, 5]))


def test_a_gated_generator_grows_an_encoder_that_starts_at_zero_and_learns_at_the_full_rate():
    from meer.models.generator import EncodedGatedGenerator, GatedGenerator

    gated = GatedGenerator(8, (4, 4, 4), width=4).eval()
    grown = EncodedGatedGenerator(8, (4, 4, 4), width=4).eval()
    new = pretrain_generator.warm_start(grown, gated.state_dict())
    assert new and all(n.startswith(("encoder.", "inject.")) for n in new)
    skips = [torch.randn(1, 4, s, s) for s in (8, 4, 2)]
    args = (torch.randn(1, 8, 1, 1), skips, torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(grown(*args), gated(*args))  # the encoder is added through zeros
    with pytest.raises(ValueError, match="another architecture"):
        pretrain_generator.warm_start(gated, grown.state_dict())

    cfg = pretrain_generator.PretrainConfig(lr=1.0, init_lr_scale=0.1)
    optimizer = pretrain_generator.make_optimizer(grown, gated.state_dict(), cfg)
    scales = {id(p): g["scale"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(grown.named_parameters())
    assert len(scales) == len(named)
    assert {scales[id(p)] for n, p in named.items() if n.startswith("encoder.")} == {1.0}
    assert {scales[id(p)] for n, p in named.items() if n.startswith("up1.")} == {0.1}
    # a run from scratch: one group at the full rate
    assert [g["scale"] for g in pretrain_generator.make_optimizer(grown, {}, cfg).param_groups] == [1.0]


def test_the_occlusion_pool_mirrors_face_region_and_coarse_map_together_and_alternates_by_pass():
    import train_occlusion

    rng = np.random.default_rng(0)
    pool = {"masked": rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
            "occlusion": rng.integers(0, 2, (3, 8, 8), dtype=np.uint8),
            "coarse": rng.normal(size=(3, 2, 2)).astype(np.float16)}
    batch = train_occlusion.pool_batch(pool, [0, 1, 3, 4], 8)
    assert batch["masked"].shape == (4, 3, 8, 8) and batch["occlusion"].shape == batch["coarse"].shape == (4, 1, 8, 8)
    plain = train_occlusion.pool_batch(pool, [0], 8)  # row 0, first pass: as stored
    torch.testing.assert_close(plain["occlusion"][0, 0], torch.from_numpy(pool["occlusion"][0]).float())
    coarse = torch.nn.functional.interpolate(torch.from_numpy(pool["coarse"][:1]).float()[:, None], size=(8, 8),
                                             mode="bilinear", align_corners=False)
    torch.testing.assert_close(plain["coarse"], coarse)
    # keys 3 and 4 are rows 0 and 1 on the second pass: each the mirror image of its first pass
    for first, second in ((0, 2), (1, 3)):
        for name in batch:
            torch.testing.assert_close(batch[name][second], batch[name][first].flip(-1))
    assert not torch.equal(batch["masked"][1], torch.from_numpy(pool["masked"][1]).permute(2, 0, 1).float() / 127.5 - 1)


def test_the_occlusion_pool_can_paste_real_masks_with_their_exact_region():
    import train_occlusion

    from meer.data.cutouts import MaskCutouts
    from meer.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(2, 2, 32, seed=0).generate()
    alpha = np.zeros((1, 32, 32), np.uint8)
    alpha[0, 18:, 6:26] = 255  # symmetric: a mirrored paste covers the same pixels
    cutouts = MaskCutouts(np.full((1, 32, 32, 3), (0, 200, 0), np.uint8), alpha)

    class Frozen:  # the frozen model: only its coarse map is read
        def __call__(self, x):
            return type("Encoded", (), {"decoupled": type("D", (), {"occlusion_logits": torch.zeros(len(x), 1, 4, 4)})})

    cfg = train_occlusion.OcclusionConfig(mask_types=["surgical"], mask_prob=1.0, passes=1)
    real = train_occlusion.build_pool(Frozen(), faces, dataclasses.replace(cfg, real_mask_share=1.0), cutouts)
    assert (real["occlusion"] == (alpha[0] >= 128)).all() and real["coarse"].shape == (4, 4, 4)
    assert (real["masked"][:, 20:, 8:24, 1] > real["masked"][:, 20:, 8:24, 0] + 100).all()  # the green cut-out
    drawn = train_occlusion.build_pool(Frozen(), faces, cfg, cutouts)  # share 0: meer's masks
    assert not (drawn["occlusion"] == (alpha[0] >= 128)).all(axis=(1, 2)).any()


def test_the_occlusion_pool_is_kept_in_the_run_folder_and_built_again_only_for_other_settings(tmp_path):
    import train_occlusion

    model = torch.nn.Module()  # the frozen model: a recogniser part, a refiner and a generator
    model.backbone, model.occlusion_refiner, model.generator = (torch.nn.Linear(2, 2) for _ in range(3))
    cfg = train_occlusion.OcclusionConfig()
    builds = []

    def build():
        builds.append(1)
        return {"masked": np.full((2, 4, 4, 3), len(builds), np.uint8), "coarse": np.zeros((2, 1, 1), np.float16)}

    first = train_occlusion.cached_pool(tmp_path, build, cfg, model)
    again = train_occlusion.cached_pool(tmp_path, build, cfg, model)  # a resumed run: read back, not built
    assert len(builds) == 1 and set(again) == {"masked", "coarse"} and (again["masked"] == first["masked"]).all()
    other = train_occlusion.cached_pool(tmp_path, build, dataclasses.replace(cfg, real_mask_share=0.5), model)
    assert len(builds) == 2 and (other["masked"] == 2).all()
    with torch.no_grad():  # a new refiner or generator leaves the coarse maps as they were
        model.occlusion_refiner.weight.add_(1.0)
        model.generator.bias.add_(1.0)
    train_occlusion.cached_pool(tmp_path, build, dataclasses.replace(cfg, real_mask_share=0.5), model)
    assert len(builds) == 2
    with torch.no_grad():  # the frozen model's coarse maps change
        model.backbone.weight.add_(1.0)
    train_occlusion.cached_pool(tmp_path, build, dataclasses.replace(cfg, real_mask_share=0.5), model)
    assert len(builds) == 3 and [f.name for f in tmp_path.iterdir()] == ["pool.npz"]  # no temporary file left


def test_the_refiners_best_step_follows_the_chosen_figure_in_its_direction():
    import train_occlusion

    assert train_occlusion.better("val/seen/iou", 0.9, None) and train_occlusion.better("val/seen/iou", 0.9, 0.8)
    assert not train_occlusion.better("val/seen/iou", 0.8, 0.9)
    assert train_occlusion.better("val/real_cutouts/boundary", 0.5, 0.6)
    assert not train_occlusion.better("val/real_cutouts/boundary", 0.6, 0.5)
    assert not train_occlusion.better("val/seen/missed", 0.02, 0.01)
    cfg = train_occlusion.OcclusionConfig()
    assert "val/seen/iou" in train_occlusion.validation_figures(cfg)
    assert not any("real_cutouts" in k or "held_out" in k for k in train_occlusion.validation_figures(cfg))
    figures = train_occlusion.validation_figures(dataclasses.replace(cfg, mask_types=["surgical"], val_cutouts="c"))
    assert {"val/held_out/ssim", "val/real_cutouts/boundary"} <= set(figures)


def test_the_occlusion_losses_score_dice_on_masked_faces_only():
    import train_occlusion

    class Refiner(torch.nn.Module):
        def forward(self, images, coarse):
            return coarse

    model = type("Model", (), {"occlusion_refiner": Refiner()})()
    target = torch.zeros(2, 1, 4, 4)
    target[1, :, :2] = 1.0  # face 0 is bare
    coarse = torch.full((2, 1, 4, 4), -3.0)
    coarse[1, :, :3] = 3.0
    cfg = train_occlusion.OcclusionConfig(bce=1.0, dice=0.5)
    total, parts = train_occlusion.losses(model, {"masked": torch.zeros(2, 3, 4, 4), "occlusion": target,
                                                  "coarse": coarse}, cfg)
    p = torch.sigmoid(coarse[1])
    dice = 1 - (2 * (p * target[1]).sum() + 1) / ((p + target[1]).sum() + 1)
    assert parts["dice"] == pytest.approx(float(dice), rel=1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(coarse, target)
    assert parts["bce"] == pytest.approx(float(bce), rel=1e-5)
    assert float(total) == pytest.approx(parts["bce"] + 0.5 * parts["dice"], rel=1e-5)
    # a weight on the mask pixels: the mask pixels' terms of the BCE count twice, the face pixels' once
    _, weighted = train_occlusion.losses(model, {"masked": torch.zeros(2, 3, 4, 4), "occlusion": target,
                                                 "coarse": coarse}, dataclasses.replace(cfg, bce_pos_weight=2.0))
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(coarse, target, reduction="none")
    assert weighted["bce"] == pytest.approx(float((per_pixel * (1 + target)).mean()), rel=1e-5)


def test_the_pretraining_can_feed_its_generator_the_refined_occlusion_and_records_it():
    base = str(BENCH.parent / "src" / "meer" / "default_model")  # the release has an occlusion refiner
    restorer = pretrain_generator.Restorer(pretrain_generator.PretrainConfig(base_model=base, generator_occlusion="refined"))
    assert restorer.model.generator_occlusion == "refined" and restorer.meer_config.model.generator_occlusion == "refined"
    assert not any(p.requires_grad for p in restorer.model.occlusion_refiner.parameters())  # only the generator learns
    assert pretrain_generator.Restorer(pretrain_generator.PretrainConfig(base_model=base)).model.generator_occlusion == "coarse"


def test_the_refiner_training_starts_fresh_or_goes_on_from_the_base_models_refiner():
    import train_occlusion

    from meer.inference.checkpoint import load_model

    base = str(BENCH.parent / "src" / "meer" / "default_model")
    released = load_model(base)[0].occlusion_refiner.state_dict()
    going_on, _ = train_occlusion.refined_model(train_occlusion.OcclusionConfig(base_model=base, fresh_refiner=False))
    fresh, meer_cfg = train_occlusion.refined_model(train_occlusion.OcclusionConfig(base_model=base))
    assert meer_cfg.model.occlusion_refiner and all(p.requires_grad for p in going_on.occlusion_refiner.parameters())
    assert all(torch.equal(v, released[k]) for k, v in going_on.occlusion_refiner.state_dict().items())
    assert not all(torch.equal(v, released[k]) for k, v in fresh.occlusion_refiner.state_dict().items())
    assert not any(p.requires_grad for p in going_on.generator.parameters())


def test_a_faces_pack_gives_back_its_faces_and_refuses_other_settings(tmp_path):
    from meer.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(3, 2, 112, seed=0).generate()
    path = str(tmp_path / "faces.safetensors")
    settings = {"lfw_cache": "data/lfw112", "val_faces": 2, "pack_quality": 95}
    pretrain_generator.write_pack(path, faces, faces.subset(np.array([0, 5])), {"train_images": 6}, settings)
    train, val, counts = pretrain_generator.read_pack(path, settings)
    assert np.array_equal(train.labels, faces.labels) and np.array_equal(train.landmarks, faces.landmarks)
    assert np.array_equal(val.labels, faces.labels[[0, 5]]) and counts["train_images"] == 6
    error = np.abs(train.images.astype(int) - faces.images.astype(int))
    assert train.images.shape == faces.images.shape and 0 < error.mean() < 6  # JPEG: near, not equal
    with pytest.raises(SystemExit, match=r"packed with other settings \(val_faces\)"):
        pretrain_generator.read_pack(path, settings | {"val_faces": 96})
