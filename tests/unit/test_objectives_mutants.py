"""Training objective behaviour found missing by mutation testing (issue #18): the terms the
wiring tests do not reach (orthogonality, distillation, the teacher as judge, feature matching,
the discriminator's objective) and which terms each set of loss groups and weights turns on.

Built from small networks directly (no Trainer), in eval mode so repeated forward passes agree.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meer.config import MODULE_GROUPS, LossConfig, TeacherConfig
from meer.losses.decoupling import occlusion_loss, orthogonality_loss
from meer.losses.gan import GANLoss, feature_matching_loss
from meer.models.discriminator import PatchDiscriminator
from meer.models.heads import MarginSoftmaxLoss, make_margin
from meer.models.meer import MEER
from meer.train.objectives import Nets, discriminator_objective, generator_objective

TEACHER_DIM = 8


def make_nets(teacher: bool = False, discriminator: bool = True) -> Nets:
    torch.manual_seed(0)
    model = MEER("iresnet18", width=0.125, input_size=32, embedding_dim=16, generator_width=8).eval()
    classifier = MarginSoftmaxLoss(4, 16, make_margin("arcface", 8.0, m2=0.3), seed=1)
    disc = PatchDiscriminator(8, 2).eval() if discriminator else None
    judge = projection = None
    if teacher:
        judge = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 4 * 4, TEACHER_DIM)).eval()
        judge.requires_grad_(False)
        projection = nn.Linear(16, TEACHER_DIM, bias=False)
    return Nets(model, classifier, disc, GANLoss("lsgan"), judge, projection)


def make_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    occlusion = torch.zeros(4, 1, 32, 32)
    occlusion[:2, :, 16:] = 1.0
    masked = clean * (1 - occlusion) + 0.3 * occlusion
    return {
        "masked": masked, "clean": clean, "occlusion": occlusion,
        "label": torch.tensor([0, 1, 2, 3]), "mask_type": torch.tensor([1, 2, 0, 0]),
        "teacher": torch.randn(4, TEACHER_DIM, generator=g),
    }


def close(actual, expected, key):
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=1e-4, atol=1e-6, msg=key)


def test_nets_name_their_trainable_groups_as_stages_do():
    nets = make_nets(teacher=True)
    groups = nets.modules()
    assert list(groups) == ["backbone", "decouple", "centres", "projection", "generator", "discriminator"]
    assert set(groups) == {*MODULE_GROUPS, "projection"}  # the names a stage's config may use
    assert groups["backbone"] is nets.model.backbone and groups["decouple"] is nets.model.decouple
    assert groups["centres"] is nets.classifier and groups["projection"] is nets.projection
    assert groups["generator"] is nets.model.generator and groups["discriminator"] is nets.discriminator
    embeddings, labels = torch.randn(3, 16), torch.tensor([0, 2, 3])
    close(nets.rec_loss(embeddings, labels), nets.classifier(embeddings, labels), "rec")


def test_recognition_terms_follow_their_weights_and_orthogonality_is_on_only_when_weighted():
    nets, batch = make_nets(), make_batch()
    weights = LossConfig(rec=1.5, rec_clean=0.0, occ=0.7, mask=0.4, dec=0.3, ortho=0.6)
    total, parts, restored = generator_objective(batch, nets, weights, {"recognition"})
    assert set(parts) == {"rec", "occ", "mask", "dec", "ortho"} and restored is None
    with torch.no_grad():
        enc = nets.model(batch["masked"])
        dec = enc.decoupled
        close(parts["rec"], 1.5 * nets.classifier(enc.embedding, batch["label"]), "rec")
        close(parts["occ"], 0.7 * occlusion_loss(dec.occlusion_logits, batch["occlusion"]), "occ")
        close(parts["mask"], 0.4 * F.cross_entropy(dec.mask_logits, batch["mask_type"]), "mask")
        close(parts["dec"], 0.3 * F.cross_entropy(dec.adversary_logits, batch["mask_type"]), "dec")
        close(parts["ortho"], 0.6 * orthogonality_loss(dec.identity, dec.mask), "ortho")
    close(total, sum(parts.values()), "total")
    _, parts, _ = generator_objective(batch, nets, LossConfig(ortho=0.0), {"recognition"})
    assert set(parts) == {"rec", "rec_clean", "occ", "mask", "dec"}


def test_distillation_pulls_the_projected_masked_and_clean_embeddings_to_the_teacher_target():
    nets, batch = make_nets(teacher=True), make_batch()
    teacher = TeacherConfig(kind="", distill=0.8, distill_clean=0.5)
    _, parts, _ = generator_objective(batch, nets, LossConfig(rec_clean=0.0), {"recognition"}, teacher)
    assert {"distill", "distill_clean"} <= set(parts) and "rec_clean" not in parts
    target = batch["teacher"]

    def distance(images):
        projected = nets.projection(nets.model(images).embedding)
        return (1 - F.cosine_similarity(projected, target)).mean()

    with torch.no_grad():
        close(parts["distill"], 0.8 * distance(batch["masked"]), "distill")
        close(parts["distill_clean"], 0.5 * distance(batch["clean"]), "distill_clean")
    _, parts, _ = generator_objective(batch, nets, LossConfig(rec_clean=1.0), {"recognition"},
                                      TeacherConfig(distill_clean=0.0))
    assert "distill" in parts and "distill_clean" not in parts and "rec_clean" in parts
    # no teacher settings (or no projection): no distillation at all
    _, parts, _ = generator_objective(batch, nets, LossConfig(), {"recognition"}, None)
    assert not {"distill", "distill_clean"} & set(parts)
    nets.projection = None
    _, parts, _ = generator_objective(batch, nets, LossConfig(), {"recognition"}, teacher)
    assert not {"distill", "distill_clean"} & set(parts)


def test_the_frozen_teacher_judges_restored_faces_against_its_cached_target():
    nets, batch = make_nets(teacher=True), make_batch()
    weights = LossConfig(id=0.9, adv=0.0)
    _, parts, restored = generator_objective(batch, nets, weights, {"synthesis"}, TeacherConfig(judge=True))
    assert set(parts) == {"pix", "id"}
    with torch.no_grad():
        expected = 0.9 * (1 - F.cosine_similarity(nets.teacher(restored), batch["teacher"])).mean()
    close(parts["id"], expected, "id")
    # judge=False: the student judges, restored against its own clean embedding
    _, parts, restored = generator_objective(batch, nets, weights, {"synthesis"}, TeacherConfig(judge=False))
    with torch.no_grad():
        own = nets.model(restored).embedding, nets.model(batch["clean"]).embedding
        close(parts["id"], 0.9 * (1 - F.cosine_similarity(*own)).mean(), "id")


def test_feature_matching_compares_discriminator_activations_of_restored_and_clean_faces():
    nets, batch = make_nets(), make_batch()
    weights = LossConfig(adv=0.3, feat_match=0.5, pix=1.0)  # a weight below 1 is still on
    _, parts, restored = generator_objective(batch, nets, weights, {"synthesis"})
    assert set(parts) == {"pix", "adv", "feat_match", "id"}
    with torch.no_grad():
        fake_scores, fake = nets.discriminator(restored, return_features=True)
        _, real = nets.discriminator(batch["clean"], return_features=True)
        close(parts["feat_match"], 0.5 * feature_matching_loss(fake, real), "feat_match")
        close(parts["adv"], 0.3 * ((fake_scores - 1) ** 2).mean(), "adv")
    _, parts, _ = generator_objective(batch, nets, LossConfig(adv=0.0, feat_match=2.0), {"synthesis"})
    assert set(parts) == {"pix", "id"}
    _, parts, _ = generator_objective(batch, make_nets(discriminator=False), LossConfig(adv=0.3), {"synthesis"})
    assert set(parts) == {"pix", "id"}


@pytest.mark.parametrize("losses", [{"synthesis"}, {"feedback"}])
def test_either_synthesis_or_feedback_turns_on_the_generator_terms(losses):
    nets, batch = make_nets(), make_batch()
    _, parts, restored = generator_objective(batch, nets, LossConfig(rec_restored=0.7), losses)
    expected = {"pix", "adv", "id"} | ({"rec_restored"} if "feedback" in losses else set())
    assert set(parts) == expected and restored is not None
    if "feedback" in losses:
        with torch.no_grad():
            rec = nets.classifier(nets.model(restored).embedding, batch["label"])
        close(parts["rec_restored"], 0.7 * rec, "rec_restored")
        _, parts, _ = generator_objective(batch, nets, LossConfig(rec_restored=0.0), losses)
        assert "rec_restored" not in parts


def test_the_discriminator_objective_halves_the_sum_of_its_real_and_fake_losses():
    nets, batch = make_nets(), make_batch()
    restored = (batch["clean"] * 0.5).requires_grad_(True)
    d_loss, parts = discriminator_objective(batch, restored, nets)
    with torch.no_grad():
        real = ((nets.discriminator(batch["clean"]) - 1) ** 2).mean()
        fake = (nets.discriminator(restored) ** 2).mean()
    close(parts["d_real"], real, "d_real")
    close(parts["d_fake"], fake, "d_fake")
    close(d_loss, 0.5 * (real + fake), "d_loss")
    assert not parts["d_real"].requires_grad and not parts["d_fake"].requires_grad
    d_loss.backward()
    assert restored.grad is None  # the generator gets nothing from the discriminator's step
    assert all(p.grad is not None for p in nets.discriminator.parameters())


def test_without_teacher_settings_the_student_judges_even_when_a_teacher_network_exists():
    nets, batch = make_nets(teacher=True), make_batch()
    _, parts, restored = generator_objective(batch, nets, LossConfig(id=0.9, adv=0.0), {"synthesis"}, None)
    with torch.no_grad():
        own = nets.model(restored).embedding, nets.model(batch["clean"]).embedding
        close(parts["id"], 0.9 * (1 - F.cosine_similarity(*own)).mean(), "id")


def test_with_the_teacher_as_judge_the_feedback_term_still_reads_the_students_view_of_the_restored_face():
    nets, batch = make_nets(teacher=True), make_batch()
    weights = LossConfig(rec_restored=0.6, adv=0.0)
    _, parts, restored = generator_objective(batch, nets, weights, {"synthesis", "feedback"}, TeacherConfig())
    assert set(parts) == {"pix", "id", "rec_restored"}
    with torch.no_grad():
        close(parts["rec_restored"], 0.6 * nets.classifier(nets.model(restored).embedding, batch["label"]), "rec")


def test_the_hinge_discriminator_objective_reads_real_and_fake_with_their_own_margins():
    nets, batch = make_nets(), make_batch()
    nets.gan = GANLoss("hinge")
    restored = batch["clean"].flip(3)
    d_loss, parts = discriminator_objective(batch, restored, nets)
    with torch.no_grad():
        real = F.relu(1 - nets.discriminator(batch["clean"])).mean()
        fake = F.relu(1 + nets.discriminator(restored)).mean()
    close(parts["d_real"], real, "d_real")
    close(parts["d_fake"], fake, "d_fake")
    close(d_loss, 0.5 * (real + fake), "d_loss")


def test_the_masked_faces_are_encoded_once_and_that_encoding_is_unmasked():
    # A second pass would cost a backbone forward and, in training, move BatchNorm statistics twice.
    nets, batch = make_nets(), make_batch()
    seen = []
    nets.model.backbone.stem.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    generator_objective(batch, nets, LossConfig(), {"recognition", "synthesis"})
    assert sum(x is batch["masked"] for x in seen) == 1
    # the clean faces too: encoded for rec_clean, that encoding is the id loss's target
    seen.clear()
    generator_objective(batch, nets, LossConfig(rec_clean=1.0), {"recognition", "synthesis"})
    assert sum(x is batch["clean"] for x in seen) == 1


def test_the_gan_loss_is_least_squares_unless_asked_otherwise():
    scores = torch.tensor([0.5, -1.0])
    gan = GANLoss()
    assert gan.mode == "lsgan"
    # least squares: real targets 1, fake targets 0
    close(gan(scores, real=True), torch.tensor(((0.5 - 1) ** 2 + (-1.0 - 1) ** 2) / 2), "real")
    close(gan(scores, real=False), torch.tensor((0.5**2 + 1.0) / 2), "fake")
