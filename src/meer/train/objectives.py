"""What each training stage optimises. Objectives compute losses and never step.

``generator_objective(batch, nets, ...) -> (total, parts, restored)`` covers the recogniser and
the generator; ``discriminator_objective`` the discriminator. Which terms are on is a set of
loss groups taken from the stage (``recognition``, ``synthesis``, ``feedback``), and each term
has its weight in :class:`meer.config.LossConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from meer.config import LossConfig, TeacherConfig
from meer.losses import weighted_mean
from meer.losses.decoupling import occlusion_loss, orthogonality_loss
from meer.losses.gan import GANLoss, feature_matching_loss
from meer.losses.identity import id_preserving_loss, pixel_loss
from meer.models.meer import MEER


@dataclass
class Nets:
    """Everything training touches. ``model`` is what ships; the rest exists only to train it."""

    model: MEER
    classifier: nn.Module  # (embeddings, labels) -> margin softmax loss; centres inside
    discriminator: nn.Module | None
    gan: GANLoss
    teacher: nn.Module | None = None  # frozen; images -> the teacher's embedding
    projection: nn.Module | None = None  # student embedding -> teacher space; trains with the backbone

    def modules(self) -> dict[str, nn.Module | None]:
        """The trainable groups by the names stages use (``projection`` follows ``backbone``)."""
        return {
            "backbone": self.model.backbone,
            "decouple": self.model.decouple,
            "centres": self.classifier,
            "projection": self.projection,
            "generator": self.model.generator,
            "discriminator": self.discriminator,
        }

    def rec_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings, labels)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    return weighted_mean(1 - F.cosine_similarity(a.float(), b.detach().float()), weight)


def twin_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """bool [B] of the samples whose ``clean`` is the same face without the mask, or None when
    all are (photos of real masks have no clean twin; see :mod:`meer.data.dataset`)."""
    twin = batch.get("twin")
    if twin is None or bool((twin > 0).all()):
        return None
    return twin > 0


def generator_objective(
    batch: dict[str, torch.Tensor], nets: Nets, weights: LossConfig, losses: set[str],
    teacher: TeacherConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """All non-discriminator losses of one step. Returns (total, parts, restored faces or None).

    With a teacher, ``batch["teacher"]`` holds the teacher's embedding of each clean face (for
    a photo of a real mask: of the same person's unmasked photos).

    Samples without a clean twin (``batch["twin"]`` 0) take part in the margin softmax, the mask
    classifier and its reversed twin, the teacher's ``pull`` and the adversarial and teacher-judged
    id losses; every term that reads the clean twin or the occlusion map leaves them out.
    """
    model = nets.model
    masked, clean, labels = batch["masked"], batch["clean"], batch["label"]
    keep = twin_rows(batch)
    twin = None if keep is None else keep.float()
    has_twins = keep is None or bool(keep.any())

    def twins(x: torch.Tensor) -> torch.Tensor:
        return x if keep is None else x[keep]

    parts: dict[str, torch.Tensor] = {}
    encoded = model(masked)
    clean_encoded = None  # of twins(clean)

    if "recognition" in losses:
        parts["rec"] = weights.rec * nets.rec_loss(encoded.embedding, labels)
        if weights.rec_clean > 0 and has_twins:
            clean_encoded = model(twins(clean))
            parts["rec_clean"] = weights.rec_clean * nets.rec_loss(clean_encoded.embedding, twins(labels))
        if encoded.decoupled is not None:
            dec = encoded.decoupled
            # a weight of 0 leaves the term out (e.g. a fine-tune of the head alone, see model.init)
            if weights.occ > 0:
                parts["occ"] = weights.occ * occlusion_loss(dec.occlusion_logits, batch["occlusion"], weight=twin)
            if weights.mask > 0:
                parts["mask"] = weights.mask * F.cross_entropy(dec.mask_logits.float(), batch["mask_type"])
            if weights.dec > 0:
                parts["dec"] = weights.dec * F.cross_entropy(dec.adversary_logits.float(), batch["mask_type"])
            if weights.ortho > 0:
                parts["ortho"] = weights.ortho * orthogonality_loss(dec.identity, dec.mask)
        if nets.projection is not None and teacher is not None:
            target = batch["teacher"]
            projected = nets.projection(encoded.embedding)
            parts["distill"] = teacher.distill * cosine_distance(projected, target, twin)
            if teacher.pull > 0:
                # only photos of real masks are pulled; a batch without any adds 0
                real = torch.zeros_like(labels, dtype=torch.float) if twin is None else 1 - twin
                parts["pull"] = teacher.pull * cosine_distance(projected, target, real)
            if teacher.distill_clean > 0 and has_twins:
                if clean_encoded is None:
                    clean_encoded = model(twins(clean))
                parts["distill_clean"] = teacher.distill_clean * cosine_distance(
                    nets.projection(clean_encoded.embedding), twins(target)
                )

    restored = None
    if "synthesis" in losses or "feedback" in losses:
        unmasked = model.unmask(masked, encoded)
        restored = unmasked.restored
        parts["pix"] = weights.pix * pixel_loss(unmasked.raw, clean, batch["occlusion"], weights.pix_inside, twin)
        if nets.discriminator is not None and weights.adv > 0:
            if weights.feat_match > 0 and has_twins:
                fake_scores, fake_features = nets.discriminator(restored, return_features=True)
                _, real_features = nets.discriminator(twins(clean), return_features=True)
                parts["feat_match"] = weights.feat_match * feature_matching_loss(
                    [twins(f) for f in fake_features], real_features
                )
            else:
                fake_scores = nets.discriminator(restored)
            parts["adv"] = weights.adv * nets.gan(fake_scores, real=True)
        restored_encoded = None
        if nets.teacher is not None and teacher is not None and teacher.judge:
            # The frozen teacher is the judge: no gradient moves it, all of it reaches the generator.
            parts["id"] = weights.id * id_preserving_loss(nets.teacher(restored), batch["teacher"])
        else:
            restored_encoded = model(restored)
            if clean_encoded is None and has_twins:
                with torch.no_grad():
                    clean_encoded = model(twins(clean))
            if has_twins:
                parts["id"] = weights.id * id_preserving_loss(twins(restored_encoded.embedding), clean_encoded.embedding)
        if "feedback" in losses and weights.rec_restored > 0:
            if restored_encoded is None:
                restored_encoded = model(restored)
            # The recogniser learns from its own de-occluded faces.
            parts["rec_restored"] = weights.rec_restored * nets.rec_loss(restored_encoded.embedding, labels)

    total = sum(parts.values())
    return total, parts, restored


def discriminator_objective(
    batch: dict[str, torch.Tensor], restored: torch.Tensor, nets: Nets
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clean faces are real, restored faces (detached) are fake. A photo of a real mask is its own
    ``clean`` face, so it is never shown to the discriminator as real."""
    keep = twin_rows(batch)
    clean = batch["clean"] if keep is None else batch["clean"][keep]
    fake = nets.gan(nets.discriminator(restored.detach()), real=False, discriminator=True)
    if len(clean):
        real = nets.gan(nets.discriminator(clean), real=True, discriminator=True)
    else:
        real = torch.zeros_like(fake)
    d_loss = 0.5 * (real + fake)
    return d_loss, {"d_real": real.detach(), "d_fake": fake.detach()}
