"""The MEER network: backbone + mask decoupling + recognition head + unmasking generator.

With ``decouple=False`` and ``generator=False`` it is a plain ArcFace network, which is how
the baselines (docs/design.md, Baselines) are built from the same code.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from meer.models.backbones import create_backbone
from meer.models.decouple import DecoupleOutput, MaskDecoupling
from meer.models.generator import blend_weights, composite, create_generator
from meer.models.occlusion import OcclusionRefiner


@dataclass
class Encoded:
    maps: list[torch.Tensor]  # backbone stage maps (strides 2, 4, 8, 16)
    identity: torch.Tensor  # x_id [B, C, h, w] (the last map itself without decoupling)
    embedding: torch.Tensor  # [B, D], not normalised
    decoupled: DecoupleOutput | None

    def select(self, rows: torch.Tensor) -> Encoded:
        """The encodings of some faces of the batch (``rows``: a bool mask or indices)."""
        dec = self.decoupled
        if dec is not None:
            dec = DecoupleOutput(*(getattr(dec, f.name)[rows] for f in dataclasses.fields(dec)))
        return Encoded([m[rows] for m in self.maps], self.identity[rows], self.embedding[rows], dec)


@dataclass
class Unmasked:
    raw: torch.Tensor  # generator output [B, 3, S, S] in [-1, 1]
    restored: torch.Tensor  # composite [B, 3, S, S]
    occlusion: torch.Tensor  # predicted probability at full resolution [B, 1, S, S]
    region: torch.Tensor  # weight of the generated pixels in the composite, in [0, 1] [B, 1, S, S]


class MEER(nn.Module):
    def __init__(
        self,
        backbone: str = "iresnet50",
        width: float = 1.0,
        input_size: int = 112,
        embedding_dim: int = 512,
        dropout: float = 0.0,
        decouple: bool = True,
        decouple_prev: bool = True,
        attention_reduction: int = 8,
        num_mask_types: int = 4,
        grl_strength: float = 1.0,
        generator: bool = True,
        generator_width: int = 32,
        generator_arch: str = "skip",
        occlusion_threshold: float = 0.5,
        blend_dilate: int = 2,
        blend_feather: int = 2,
        occlusion_refiner: bool = False,
        generator_occlusion: str = "coarse",
        pretrained: str = "",
    ) -> None:
        super().__init__()
        if generator and not decouple:
            raise ValueError("the generator needs the decoupling module's occlusion map")
        if occlusion_refiner and not decouple:
            raise ValueError("the occlusion refiner needs the decoupling module's occlusion map")
        if generator_occlusion not in ("coarse", "refined"):
            raise ValueError(f"generator_occlusion must be coarse or refined, got {generator_occlusion!r}")
        if generator_occlusion == "refined" and not occlusion_refiner:
            raise ValueError("generator_occlusion refined needs the occlusion refiner (occlusion_refiner=True)")
        self.generator_occlusion = generator_occlusion
        self.input_size = input_size
        self.occlusion_threshold = occlusion_threshold
        self.blend_dilate, self.blend_feather = blend_dilate, blend_feather
        self.backbone = create_backbone(
            backbone, width=width, input_size=input_size, embedding_dim=embedding_dim, dropout=dropout,
            pretrained=pretrained,
        )
        channels = self.backbone.channels
        self.decouple = (
            MaskDecoupling(
                channels[3],
                channels[2] if decouple_prev else None,
                num_mask_types,
                attention_reduction,
                grl_strength,
            )
            if decouple
            else None
        )
        if self.decouple is not None and pretrained:
            # Start with (almost) no attention, x_id ~ x: the pretrained network's embedding
            # survives the new module until training teaches it what to take out.
            self.decouple.start_closed()
        self.generator = (
            create_generator(generator_arch, channels[3], channels[:3], generator_width) if generator else None
        )
        self.occlusion_refiner = OcclusionRefiner() if occlusion_refiner else None

    @property
    def embedding_dim(self) -> int:
        """The size of the embedding the network outputs."""
        return self.backbone.head.fc.out_features

    def forward(self, images: torch.Tensor) -> Encoded:
        """``[B, 3, S, S]`` in [-1, 1] -> maps, identity part, embedding, decoupling outputs."""
        maps = self.backbone.forward_features(images)
        decoupled = self.decouple(maps[3], maps[2]) if self.decouple is not None else None
        identity = decoupled.identity if decoupled is not None else maps[3]
        return Encoded(maps, identity, self.backbone.head(identity), decoupled)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, flip: bool = False, encoded: Encoded | None = None) -> torch.Tensor:
        """Unit-norm embeddings ``[B, D]``; ``flip`` adds the mirrored image's embedding.
        ``encoded``: ``self(images)``, where the caller has it already."""
        embedding = (self(images) if encoded is None else encoded).embedding
        if flip:
            embedding = embedding + self(torch.flip(images, dims=[3])).embedding
        return F.normalize(embedding.float())

    def occlusion_probability(self, encoded: Encoded, size: int, images: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted occlusion upsampled to ``[B, 1, size, size]``; given the ``images`` that were
        encoded, sharpened by the occlusion refiner where the model has one."""
        logits = self._coarse_logits(encoded, size)
        if self.occlusion_refiner is not None and images is not None:
            logits = self.occlusion_refiner(images, logits)
        return torch.sigmoid(logits)

    def _coarse_logits(self, encoded: Encoded, size: int) -> torch.Tensor:
        """The decoupling module's occlusion logits upsampled to ``[B, 1, size, size]``."""
        if encoded.decoupled is None:
            raise ValueError("this model has no decoupling module, so it predicts no occlusion")
        return F.interpolate(encoded.decoupled.occlusion_logits, size=(size, size), mode="bilinear", align_corners=False)

    def unmask(self, images: torch.Tensor, encoded: Encoded | None = None, flip: bool = False) -> Unmasked:
        """Restore the face under the predicted mask; pixels outside it are the input's.

        The repainted region is the predicted occlusion (sharpened by the occlusion refiner where
        the model has one; the generator reads the map named by ``generator_occlusion``) above the threshold, grown by
        ``blend_dilate`` pixels and feathered over ``2 * blend_feather`` pixels
        (:func:`meer.models.generator.blend_weights`); pixels beyond it are the input bit for bit.
        ``flip`` also restores the mirrored image and averages the two (occlusion and generated
        face, mirrored back), as ``embed`` does for embeddings: twice the cost.
        """
        if self.generator is None:
            raise ValueError("this model was built without a generator")
        if encoded is None:
            encoded = self(images)
        raw, occlusion = self._restore(images, encoded)
        if flip:
            mirrored = torch.flip(images, dims=[3])
            raw_m, occlusion_m = self._restore(mirrored, self(mirrored))
            raw = (raw + torch.flip(raw_m, dims=[3])) / 2
            occlusion = (occlusion + torch.flip(occlusion_m, dims=[3])) / 2
        region = blend_weights((occlusion > self.occlusion_threshold).to(images.dtype), self.blend_dilate,
                               self.blend_feather)
        return Unmasked(raw, composite(raw, images, region), occlusion, region)

    def _restore(self, images: torch.Tensor, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's raw output and the occlusion the composite follows (refined if it can be)."""
        coarse = self._coarse_logits(encoded, images.shape[-1])
        if self.occlusion_refiner is None:
            occlusion = read = torch.sigmoid(coarse)
        else:
            occlusion = torch.sigmoid(self.occlusion_refiner(images, coarse))
            read = occlusion if self.generator_occlusion == "refined" else torch.sigmoid(coarse)
        return self.generator(encoded.identity, encoded.maps[:3], images, read), occlusion


def build_model(model_cfg) -> MEER:
    """A :class:`MEER` from a :class:`meer.config.ModelConfig`: every config field that names one of
    MEER's arguments is passed as it is (the others, such as ``frozen_stages``, are for training)."""
    arguments = inspect.signature(MEER).parameters
    fields = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k in arguments}
    return MEER(**fields)
