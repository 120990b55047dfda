"""MEER's mechanisms checked where the trainer wires them: the gradient reversal and the
decoupling loss as the trainer's step sees them, the margin the trainer builds, every loss
term at its configured weight, stage freezing, the learning-rate schedule across a resume,
and ``load_model`` restoring every tensor."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from meer.inference import checkpoint as ckpt
from meer.train.trainer import Trainer

from .conftest import killed_after, stages

WEIGHTS = [
    "loss.rec=1.3", "loss.rec_clean=0.7", "loss.occ=0.9", "loss.mask=0.4", "loss.dec=0.3", "loss.pix=2.5",
    "loss.pix_inside=3.0", "loss.adv=0.2", "loss.id=0.6", "loss.rec_restored=0.8", "model.grl_strength=0.5",
]


@pytest.fixture
def trainer(tiny_config, tiny_faces):
    return Trainer(tiny_config(stages(2, 2, 2), *WEIGHTS), tiny_faces, progress=False)


def first_batch(trainer):
    batch = trainer.to_device(next(iter(trainer.loader(0))))
    assert (batch["mask_type"] > 0).any() and (batch["mask_type"] == 0).any()
    return batch


def stage_named(trainer, name):
    return next(s for s in trainer.cfg.stages if s.name == name)


def trained_backbone_params(trainer):
    return [p for p in trainer.nets.model.backbone.parameters() if p.requires_grad]


def backbone_grad(trainer, state, batch):
    """Gradient of the step's total loss on the backbone's weights, flattened; and the parts."""
    trainer.nets.model.zero_grad(set_to_none=True)
    trainer.nets.classifier.zero_grad(set_to_none=True)
    total, parts, _ = state.g_step(batch)
    total.backward()
    grads = [p.grad.flatten() for p in trained_backbone_params(trainer)]
    return torch.cat(grads), {k: float(v.detach()) for k, v in parts.items()}


def test_trainer_step_sends_the_reversed_decoupling_gradient_into_the_backbone(trainer):
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    batch = first_batch(trainer)
    decouple = trainer.nets.model.decouple
    assert decouple.grl_strength == 0.5  # model.grl_strength reaches the model
    reversed_grad, parts = backbone_grad(trainer, state, batch)
    decouple.grl_strength = 0.0  # the adversary's gradient stops at x_id
    without, _ = backbone_grad(trainer, state, batch)
    decouple.grl_strength = -1.0  # a reversal of -1 passes the ordinary gradient
    ordinary, _ = backbone_grad(trainer, state, batch)
    decouple.grl_strength = 0.5
    from_adversary = reversed_grad - without
    assert (ordinary - without).norm() > 1e-4, "the decoupling loss sends no gradient to the backbone"
    expected = -0.5 * (ordinary - without)
    # compared as whole vectors: element-wise, float32 cancellation dominates the small entries
    assert (from_adversary - expected).norm() < 0.02 * expected.norm()  # a wrong wiring is off by 100% or more

    # and its sign is the adversarial one: descending it makes the mask type *harder* to read
    params = trained_backbone_params(trainer)
    sizes = [p.numel() for p in params]
    step = 1e-3 / from_adversary.square().sum()
    with torch.no_grad():
        for p, g in zip(params, from_adversary.split(sizes)):
            p.sub_(step * g.view_as(p))
    _, after = state.g_step(batch)[:2]
    assert float(after["dec"].detach()) > parts["dec"] + 1e-4


def hand_arcface_loss(head, embeddings, labels, scale, m2):
    cosine = F.normalize(embeddings) @ F.normalize(head.weight.detach()).T
    logits = scale * cosine.clone()
    for i, y in enumerate(labels.tolist()):
        logits[i, y] = scale * math.cos(math.acos(float(cosine[i, y])) + m2)
    return F.cross_entropy(logits, labels)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_trainer_builds_the_configured_margin(tiny_config, tiny_faces, kind):
    extra = [f"margin.type={kind}", "margin.scale=12", "margin.m1=0.8", "margin.m2=0.35", "margin.m3=0.25"]
    nets = Trainer(tiny_config(stages(1, 1, 1), *extra), tiny_faces, progress=False).nets
    embeddings, labels = torch.randn(6, 32), torch.tensor([0, 3, 5, 7, 9, 15])
    head = nets.classifier
    if kind == "arcface":
        expected = hand_arcface_loss(head, embeddings, labels, 12.0, 0.35)
    else:
        cosine = F.normalize(embeddings) @ F.normalize(head.weight.detach()).T
        logits = 12.0 * (cosine - 0.25 * F.one_hot(labels, cosine.shape[1]))
        expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(head(embeddings, labels).detach(), expected, rtol=1e-5, atol=1e-5)


def hand_pixel_loss(raw, clean, occlusion, inside):
    weight = (1 + inside * occlusion).expand_as(raw)
    return (weight * (raw - clean).abs()).sum() / weight.sum()


def test_every_loss_term_enters_the_step_at_its_weight(trainer):
    w = trainer.cfg.loss
    batch = first_batch(trainer)
    model, head = trainer.nets.model, trainer.nets.classifier
    masked, clean, labels, kinds = batch["masked"], batch["clean"], batch["label"], batch["mask_type"]

    state = trainer.build_stage(stage_named(trainer, "recognition"))
    _, parts, restored = state.g_step(batch)
    assert restored is None and set(parts) == {"rec", "rec_clean", "occ", "mask", "dec"}
    with torch.no_grad():
        enc, clean_enc = model(masked), model(clean)
        dec = enc.decoupled
        from meer.losses.decoupling import occlusion_loss

        expected = {
            "rec": w.rec * head(enc.embedding, labels),
            "rec_clean": w.rec_clean * head(clean_enc.embedding, labels),
            "occ": w.occ * occlusion_loss(dec.occlusion_logits, batch["occlusion"]),
            "mask": w.mask * F.cross_entropy(dec.mask_logits, kinds),
            "dec": w.dec * F.cross_entropy(dec.adversary_logits, kinds),
        }
    for key, value in expected.items():
        torch.testing.assert_close(parts[key].detach(), value, rtol=1e-4, atol=1e-6, msg=key)

    state = trainer.build_stage(stage_named(trainer, "joint"))
    discriminator = trainer.nets.discriminator
    power_iteration = snapshot(discriminator)  # spectral norm moves its vectors on each call
    _, parts, restored = state.g_step(batch)
    discriminator.load_state_dict(power_iteration)
    assert {"pix", "adv", "id", "rec_restored"} <= set(parts) and restored is not None
    with torch.no_grad():
        enc = model(masked)
        unmasked = model.unmask(masked, enc)
        restored_emb, clean_emb = model(unmasked.restored).embedding, model(clean).embedding
        expected = {
            "pix": w.pix * hand_pixel_loss(unmasked.raw, clean, batch["occlusion"], w.pix_inside),
            "adv": w.adv * ((discriminator(unmasked.restored) - 1) ** 2).mean(),
            "id": w.id * (1 - F.cosine_similarity(restored_emb, clean_emb)).mean(),
            "rec_restored": w.rec_restored * head(restored_emb, labels),
        }
    torch.testing.assert_close(restored.detach(), unmasked.restored)
    for key, value in expected.items():
        torch.testing.assert_close(parts[key].detach(), value, rtol=1e-4, atol=1e-6, msg=key)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return sorted(k for k, v in module.state_dict().items() if not torch.equal(v, before[k]))


def test_a_stage_trains_only_its_modules(trainer):
    groups = trainer.nets.modules()
    batch = first_batch(trainer)
    for stage_name, trained in [("synthesis", {"generator", "discriminator"}),
                                ("recognition", {"backbone", "decouple", "centres"})]:
        state = trainer.build_stage(stage_named(trainer, stage_name))
        before = {name: snapshot(m) for name, m in groups.items() if m is not None}
        trainer.train_step(state, [batch])
        for name, module in groups.items():
            if module is None:
                continue
            moved = changed(before[name], module)
            if name in trained:
                assert moved, f"{stage_name}: {name} did not train"
            else:  # weights and BatchNorm statistics alike stay as they were
                assert not moved, f"{stage_name}: frozen {name} changed: {moved[:3]}"
                assert not any(p.requires_grad for p in module.parameters()), name


def test_resume_restores_the_cosine_schedule(tiny_config, tiny_faces, monkeypatch):
    one_stage = "stages=[{name: recognition, steps: 6, train: [backbone, decouple, centres], losses: [recognition]}]"
    extra = [one_stage, "optim.schedule=cosine", "train.log_every=1", "train.ckpt_every=3", "train.deterministic=true"]
    reference = Trainer(tiny_config(*extra, run="reference"), tiny_faces, progress=False).fit(resume=False)
    lrs = [r["lr"] for r in reference]
    assert all(a > b for a, b in zip(lrs, lrs[1:])), f"the cosine schedule does not fall: {lrs}"

    cfg = tiny_config(*extra)
    killed_after(cfg, tiny_faces, 4, monkeypatch)
    resumed = Trainer(cfg, tiny_faces, progress=False).fit(resume=True)
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [r["lr"] for r in resumed] == pytest.approx(lrs[3:], rel=1e-9)
    assert [r["total"] for r in resumed] == pytest.approx([r["total"] for r in reference[3:]], rel=1e-5)


def test_load_model_restores_every_tensor_and_refuses_a_missing_one(tiny_config, tiny_faces, tmp_path):
    cfg = tiny_config(stages(2, 2, 1))
    Trainer(cfg, tiny_faces, progress=False).fit(resume=False)
    latest = ckpt.latest_checkpoint(cfg.train.out_dir)
    saved = ckpt.split_state(load_file(str(latest / ckpt.WEIGHTS)), "model")
    model, _, _ = ckpt.load_model(latest)
    state = model.state_dict()
    assert set(state) == set(saved)
    different = [k for k in saved if not torch.equal(state[k], saved[k])]
    assert not different, different[:5]

    import shutil

    damaged = shutil.copytree(latest, tmp_path / "damaged")
    tensors = load_file(str(damaged / ckpt.WEIGHTS))
    dropped = next(k for k in tensors if k.startswith("model.generator.") and k.endswith(".weight"))
    del tensors[dropped]
    save_file(tensors, str(damaged / ckpt.WEIGHTS))
    # one line that names the missing weight
    with pytest.raises(ValueError, match=rf"do not match .*: Missing key\(s\) in state_dict: \"{dropped[len('model.'):]}\"") as err:
        ckpt.load_model(damaged)
    assert "\n" not in str(err.value)
    tensors[dropped.replace(".weight", ".extra")] = torch.zeros(1)
    save_file(tensors, str(damaged / ckpt.WEIGHTS))
    with pytest.raises(ValueError, match=r"Missing key.*Unexpected key\(s\) in state_dict: \".*\.extra\""):
        ckpt.load_model(damaged)
