"""``model.frozen_stages``: the stem and the first stages of the backbone keep their weights."""

import torch

from meer.train.trainer import Trainer
from tests.integration.conftest import stages


def test_frozen_stages_keep_their_weights_and_the_rest_trains(tiny_config, tiny_faces):
    cfg = tiny_config("model.frozen_stages=2", stages(4, 0, 0))
    trainer = Trainer(cfg, tiny_faces, progress=False)
    backbone = trainer.nets.model.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainer.fit(resume=False)
    after = backbone.state_dict()
    frozen = ("stem.", "stages.0.", "stages.1.")
    for name, value in after.items():
        if name.startswith(frozen):  # weights and BatchNorm statistics alike
            assert torch.equal(value, before[name]), name
    changed = [n for n, v in after.items() if n.startswith(("stages.2.", "stages.3.", "head.fc"))
               and not torch.equal(v, before[n])]
    assert any(n.startswith("stages.2.") for n in changed) and any(n.startswith("stages.3.") for n in changed)
