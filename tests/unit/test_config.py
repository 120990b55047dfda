"""Config loading: layering, overrides, and clear errors for bad configs."""

from pathlib import Path

import pytest

from meer.config import builtin_config_names, load_config


def test_builtin_configs_all_load():
    names = builtin_config_names()
    assert {"tiny", "tiny-arcface", "tiny-arcface-maskaug", "tiny-meer-nogen", "tiny-e2e", "iresnet50"} <= set(names)
    for name in names:
        load_config(name)


def test_benchmark_configs_all_load():
    """bench/configs: the benchmark's recipes, based on the built-in configs."""
    files = sorted((Path(__file__).resolve().parents[2] / "bench" / "configs").glob("*.yaml"))
    assert {"lfw", "lfw-teacher", "lfw-sface"} <= {f.stem for f in files}
    for file in files:
        load_config(file)


def test_base_chain_and_overrides():
    cfg = load_config("tiny-arcface-maskaug", ["optim.lr=0.05", "model.width=0.5"])
    assert cfg.data.mask_prob == 0.5  # from tiny-arcface-maskaug
    assert cfg.model.decouple is False  # from tiny-arcface
    assert cfg.model.input_size == 48  # from tiny
    assert cfg.optim.lr == 0.05 and cfg.model.width == 0.5
    assert [s.name for s in cfg.stages] == ["recognition"]


def test_layered_files(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train: {seed: 7}\n")
    cfg = load_config(["tiny", str(overlay)])
    assert cfg.train.seed == 7 and cfg.model.backbone == "iresnet18"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key optim.lrr"),
        ("optim.lr=fast", "optim.lr must be a number"),
        ("model.decouple=3", "model.decouple must be true or false"),
        ("model.input_size=50", "multiple of 16"),
        ("model.backbone=resnet9", "model.backbone must be one of"),
        ("data.mask_prob=1.5", "data.mask_prob must be in"),
        ("margin.type=softmax", "margin.type must be"),
        ("nonsense", "must look like section.key=value"),
        ("stages=[{name: a, steps: 1, train: [wheels], losses: [recognition]}]", "unknown module 'wheels'"),
        ("stages=[]", "at least one stage"),
        ("model.pretrained=imagenet", "model.pretrained must be one of"),
        ("model.pretrained=dlib", "needs backbone dlib_resnet, input_size 150 and embedding_dim 128"),
        ("teacher.kind=vgg", "teacher.kind must be one of"),
        ("teacher.kind=dlib", "reads 150x150 faces"),
        ("train.ckpt_every=0", "train.ckpt_every must be >= 1, got 0"),
        ("train.log_every=-1", "train.log_every must be >= 1, got -1"),
        ("optim.disc_lr=-1", r"optim.disc_lr must be positive, got -1"),
        ("optim.lr=0", "optim.lr must be positive, got 0"),
        ("optim.warmup_steps=-5", "optim.warmup_steps must be >= 0, got -5"),
        ("optim.betas=[0.5]", r"optim.betas must be two numbers in \[0, 1\)"),
        ("data.sources=[{path: a, weight: .inf}]", "the weight of 'a' must be a positive number, got inf"),
    ],
)
def test_bad_values_fail_with_a_clear_message(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", [override])


def test_stage_that_trains_a_missing_module_is_rejected():
    with pytest.raises(ValueError, match="trains 'generator', which this model does not have"):
        load_config("tiny", ["model.generator=false"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(str(broken))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="is empty"):
        load_config(str(empty))
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("base: cycle.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(str(cycle))


def test_every_model_argument_is_a_model_config_field():
    import dataclasses
    import inspect

    from meer.config import ModelConfig
    from meer.models.meer import MEER, build_model

    arguments = set(inspect.signature(MEER).parameters)
    assert arguments <= {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = ModelConfig(backbone="iresnet18", width=0.125, input_size=32, embedding_dim=24, num_mask_types=5,
                      generator_width=8, occlusion_threshold=0.3, grl_strength=0.25)
    model = build_model(cfg)
    assert model.embedding_dim == 24 and model.input_size == 32 and model.occlusion_threshold == 0.3
    assert model.decouple.mask_head.out_features == 5 and model.decouple.grl_strength == 0.25


def test_configs_of_earlier_versions_still_load():
    from meer.config import config_from_dict, load_config

    saved = load_config("tiny").to_dict()
    del saved["model"]["grl_strength"]
    saved["loss"]["grl_lambda"] = 0.3  # where it was before
    assert config_from_dict(saved).model.grl_strength == 0.3
    assert load_config("tiny", ["loss.grl_lambda=0.6"]).model.grl_strength == 0.6
    assert load_config("tiny", ["model.grl_strength=0.2"]).model.grl_strength == 0.2
