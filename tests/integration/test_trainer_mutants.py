"""The trainer's wiring (build_nets, set_trainable, build_stage, restore, load_model): behaviour
found missing by mutation testing (issue #18)."""

import dataclasses
import types

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from meer.inference import checkpoint as ckpt
from meer.inference.checkpoint import load_model
from meer.losses.gan import GANLoss
from meer.models.discriminator import PatchDiscriminator
from meer.models.heads import MarginSoftmaxLoss, init_centres
from meer.models.partial_fc import ShardedMarginSoftmaxLoss
from meer.train.trainer import DiscriminatorStep, GeneratorStep, Trainer, build_nets

from .conftest import stages


def same_shapes(a: nn.Module, b: nn.Module) -> bool:
    return {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_build_nets_takes_every_part_from_the_config(tiny_config):
    cfg = tiny_config(stages(1, 1, 1), "model.grl_strength=0.4", "loss.gan_mode=hinge", "train.seed=7",
                      "model.discriminator_width=8", "model.discriminator_layers=2", "margin.type=combined",
                      "margin.scale=16", "margin.m1=0.9", "margin.m2=0.2", "margin.m3=0.1")
    nets = build_nets(cfg, 5)
    assert nets.model.decouple.grl_strength == 0.4
    assert type(nets.classifier) is MarginSoftmaxLoss
    margin = nets.classifier.margin
    assert (margin.scale, margin.m1, margin.m2, margin.m3) == (16, 0.9, 0.2, 0.1)
    assert torch.equal(nets.classifier.full_weight(), init_centres(0, 5, cfg.model.embedding_dim, seed=7))
    assert isinstance(nets.gan, GANLoss) and nets.gan.mode == "hinge"
    assert same_shapes(nets.discriminator, PatchDiscriminator(8, 2))
    assert not same_shapes(nets.discriminator, PatchDiscriminator(8, 3))
    assert nets.teacher is None and nets.projection is None
    sharded = build_nets(tiny_config(stages(1, 1, 1), "train.shard_centres=true"), 5)
    assert isinstance(sharded.classifier, ShardedMarginSoftmaxLoss)
    one_stage = "stages=[{name: recognition, steps: 1, train: [backbone, decouple, centres], losses: [recognition]}]"
    plain = build_nets(tiny_config(one_stage, "model.generator=false"), 5)
    assert plain.discriminator is None and plain.model.generator is None


class FakeTeacher(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.head = nn.Module()
        self.head.fc = nn.Linear(4, dim)


@pytest.mark.parametrize("dim", [32, 12])
def test_build_nets_projects_the_student_into_the_teachers_space(tiny_config, monkeypatch, dim):
    import meer.models.backbones

    kinds = []
    monkeypatch.setattr(meer.models.backbones, "create_teacher", lambda kind: kinds.append(kind) or FakeTeacher(dim))
    cfg = tiny_config(stages(1, 1, 1), "teacher.kind=sface", "model.input_size=112")
    nets = build_nets(cfg, 5)
    assert kinds == ["sface"] and isinstance(nets.teacher, FakeTeacher)
    projection = nets.projection
    assert projection.weight.shape == (dim, 32) and projection.bias is None
    # a student as wide as its teacher starts aligned with it
    assert torch.equal(projection.weight, torch.eye(32)) == (dim == 32)


def stage_named(trainer, name):
    return next(s for s in trainer.cfg.stages if s.name == name)


def ids(params):
    return {id(p) for p in params}


def trainable(*modules):
    return {id(p) for m in modules for p in m.parameters() if p.requires_grad}


OPTIM = ["optim.optimizer=sgd", "optim.lr=0.05", "optim.momentum=0.8", "optim.weight_decay=0.001", "optim.gen_lr=0.0003",
         "optim.disc_lr=0.0005", "optim.betas=[0.4,0.99]"]


def test_each_stage_gets_the_configured_optimisers_over_exactly_its_trainable_weights(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(2, 2, 2), *OPTIM), tiny_faces, progress=False)
    nets = trainer.nets
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    assert set(state.optimisers) == {"recogniser"} == set(state.schedulers) and state.d_step is None
    sgd = state.optimisers["recogniser"]
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.8, 0.001)
    assert ids(group["params"]) == trainable(nets.model.backbone, nets.model.decouple, nets.classifier)
    assert id(nets.model.backbone.head.features.weight) not in ids(group["params"])

    state = trainer.build_stage(stage_named(trainer, "joint"))  # lr_scale 0.2
    assert set(state.optimisers) == {"recogniser", "generator", "discriminator"} and state.d_step is not None
    assert state.optimisers["recogniser"].param_groups[0]["lr"] == pytest.approx(0.01)
    for key, lr, module in [("generator", 0.0003, nets.model.generator), ("discriminator", 0.0005, nets.discriminator)]:
        optimiser = state.optimisers[key]
        assert type(optimiser) is torch.optim.Adam
        group = optimiser.param_groups[0]
        assert group["lr"] == pytest.approx(0.2 * lr) and group["betas"] == (0.4, 0.99)
        assert ids(group["params"]) == ids(module.parameters())
    # the discriminator is frozen outside its own step
    assert not any(p.requires_grad for p in nets.discriminator.parameters())

    state = trainer.build_stage(stage_named(trainer, "synthesis"))
    assert set(state.optimisers) == {"generator", "discriminator"}
    assert state.optimisers["generator"].param_groups[0]["lr"] == pytest.approx(0.0003)


def test_head_lr_scale_gives_the_layers_outside_the_backbone_their_own_rate(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(2, 2, 2), *OPTIM, "optim.head_lr_scale=10"), tiny_faces, progress=False)
    nets = trainer.nets
    backbone, heads = trainer.build_stage(stage_named(trainer, "recognition")).optimisers["recogniser"].param_groups
    assert backbone["lr"] == pytest.approx(0.05) and heads["lr"] == pytest.approx(0.5)
    assert ids(backbone["params"]) == trainable(nets.model.backbone)
    assert ids(heads["params"]) == trainable(nets.model.decouple, nets.classifier)
    groups = trainer.build_stage(stage_named(trainer, "joint")).optimisers["recogniser"].param_groups  # lr_scale 0.2
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1])


def test_adamw_and_the_schedule_reach_the_recogniser(tiny_config, tiny_faces):
    extra = [*OPTIM, "optim.optimizer=adamw", "optim.warmup_steps=2", "optim.schedule=cosine"]
    trainer = Trainer(tiny_config(stages(6, 2, 2), *extra), tiny_faces, progress=False)
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    adamw = state.optimisers["recogniser"]
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.001
    scheduler = state.schedulers["recogniser"]
    lrs = []
    for _ in range(6):
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        scheduler.step()
    # warm-up over 2 steps, then a cosine over the remaining 4
    assert lrs == pytest.approx([0.025, 0.05, 0.05, 0.025 * (1 + 0.5 ** 0.5), 0.025, 0.025 * (1 - 0.5 ** 0.5)])


def test_a_projection_trains_with_the_backbone_and_the_fixed_scale_bn_never_trains(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(1, 1, 1)), tiny_faces, progress=False)
    trainer.nets.projection = nn.Linear(32, 8, bias=False)
    features = trainer.nets.model.backbone.head.features
    trainer.set_trainable(stage_named(trainer, "recognition"))
    assert trainer.nets.projection.training and trainer.nets.projection.weight.requires_grad
    assert not features.weight.requires_grad and features.bias.requires_grad
    # ... and the recogniser's optimiser moves it
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    assert id(trainer.nets.projection.weight) in ids(state.optimisers["recogniser"].param_groups[0]["params"])
    trainer.set_trainable(stage_named(trainer, "synthesis"))
    assert not trainer.nets.projection.training and not trainer.nets.projection.weight.requires_grad


def test_a_pretrained_backbone_keeps_its_batchnorm_statistics_and_frozen_stages_their_weights(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(1, 1, 1), "model.frozen_stages=2"), tiny_faces, progress=False)
    backbone = trainer.nets.model.backbone
    trainer.set_trainable(stage_named(trainer, "recognition"))
    for module in [backbone.stem, *backbone.stages[:2]]:
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    for module in backbone.stages[2:]:
        assert module.training and all(p.requires_grad for p in module.parameters())
    norms = [m for m in backbone.stages[3].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.training for m in norms)
    trainer.cfg.model = dataclasses.replace(trainer.cfg.model, frozen_stages=0)
    object.__setattr__(trainer.cfg.model, "pretrained", "sface")  # what a pretrained run sets
    trainer.set_trainable(stage_named(trainer, "recognition"))
    assert all(p.requires_grad for p in backbone.stem.parameters())  # trains, with fixed statistics
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not any(m.training for m in norms)
    assert all(p.requires_grad for p in backbone.stages[0].parameters())


def first_batch(trainer):
    return trainer.to_device(next(iter(trainer.loader(0))))


def saved_run(tiny_config, tiny_faces, step, extra=()):
    """A trainer that took one step of its first stage and saved it as step ``step``."""
    trainer = Trainer(tiny_config(stages(2, 2, 2), "optim.optimizer=sgd", *extra), tiny_faces, progress=False)
    trainer.nets.projection = nn.Linear(32, 8, bias=False)
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    trainer.train_step(state, [first_batch(trainer)])
    trainer.save(0, step, state)
    return trainer, state, ckpt.latest_checkpoint(trainer.cfg.train.out_dir)


def test_restore_loads_every_network_and_the_random_state_and_continues_the_stage(tiny_config, tiny_faces):
    source, source_state, path = saved_run(tiny_config, tiny_faces, step=1)
    saved_rng = ckpt.load_train_state(path)["torch_rng"]
    target = Trainer(tiny_config(stages(2, 2, 2), "optim.optimizer=sgd", "train.seed=5", run="other"), tiny_faces, progress=False)
    target.nets.projection = nn.Linear(32, 8, bias=False)
    torch.manual_seed(123)
    index, step, train_state = target.restore(path)
    assert (index, step) == (0, 1) and set(train_state) >= {"optimisers", "schedulers", "scaler", "torch_rng"}
    assert torch.equal(torch.get_rng_state(), saved_rng)
    for name in ("model", "discriminator", "projection"):
        a, b = getattr(source.nets, name).state_dict(), getattr(target.nets, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(target.nets.classifier.full_weight(), source.nets.classifier.full_weight())

    # the optimisation state continues where it stopped
    state = target.build_stage(stage_named(target, "recognition"))
    target.load_optimisation_state(state, train_state)
    restored, original = state.optimisers["recogniser"].state_dict(), source_state.optimisers["recogniser"].state_dict()
    buffers = [v["momentum_buffer"] for v in original["state"].values()]
    assert buffers and all(torch.equal(a["momentum_buffer"], b) for a, b in zip(restored["state"].values(), buffers))
    assert state.schedulers["recogniser"].last_epoch == source_state.schedulers["recogniser"].last_epoch == 1
    fresh = target.build_stage(stage_named(target, "recognition"))
    target.load_optimisation_state(fresh, None)  # a new stage starts from scratch
    assert not fresh.optimisers["recogniser"].state_dict()["state"]


def test_a_checkpoint_that_closed_its_stage_resumes_at_the_next_one(tiny_config, tiny_faces):
    _, _, path = saved_run(tiny_config, tiny_faces, step=2)
    target = Trainer(tiny_config(stages(2, 2, 2), run="other"), tiny_faces, progress=False)
    target.nets.projection = nn.Linear(32, 8, bias=False)
    assert target.restore(path) == (1, 0, None)


def test_restore_refuses_a_checkpoint_of_another_number_of_identities(tiny_config, tiny_faces):
    _, _, path = saved_run(tiny_config, tiny_faces, step=1)
    from meer.data.faceset import FaceSet

    fewer = tiny_faces.labels < 12
    subset = FaceSet(tiny_faces.images[fewer], tiny_faces.landmarks[fewer], tiny_faces.labels[fewer], tiny_faces.names)
    target = Trainer(tiny_config(stages(2, 2, 2), run="other"), subset, progress=False)
    with pytest.raises(ValueError, match="16 identities, this data has 12"):
        target.restore(path)


def test_load_model_gives_an_inference_network_in_eval_mode_on_the_asked_device(tiny_config, tiny_faces):
    source, _, path = saved_run(tiny_config, tiny_faces, step=1, extra=["model.grl_strength=0.3"])
    model, cfg, meta = load_model(path)
    assert not model.training and all(not m.training for m in model.modules())
    assert next(model.parameters()).device.type == "cpu"
    assert cfg.model.grl_strength == 0.3 and model.decouple.grl_strength == 0.3
    assert meta["step"] == 1 and meta["num_classes"] == 16
    model, _, _ = load_model(path, device="meta")
    assert next(model.parameters()).device.type == "meta"


def test_a_constant_schedule_keeps_the_learning_rate_after_the_warm_up(tiny_config, tiny_faces):
    extra = ["optim.optimizer=sgd", "optim.lr=0.05", "optim.warmup_steps=2", "optim.schedule=constant"]
    trainer = Trainer(tiny_config(stages(6, 2, 2), *extra), tiny_faces, progress=False)
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    sgd, scheduler = state.optimisers["recogniser"], state.schedulers["recogniser"]
    lrs = []
    for _ in range(6):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        scheduler.step()
    assert lrs == pytest.approx([0.025, 0.05, 0.05, 0.05, 0.05, 0.05])


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo group of one process: DDP wraps and runs as it does under torchrun."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_under_ddp_each_step_is_wrapped_over_the_weights_it_trains(tiny_config, tiny_faces, one_process_group):
    trainer = Trainer(tiny_config(stages(2, 2, 2), "train.shard_centres=true"), tiny_faces, progress=False)
    trainer.env = dataclasses.replace(trainer.env, world_size=2)  # what torchrun's variables would say
    discriminator = trainer.nets.discriminator
    state = trainer.build_stage(stage_named(trainer, "joint"))
    g_step, d_step = state.g_step, state.d_step
    assert isinstance(g_step, DDP) and isinstance(g_step.module, GeneratorStep) and g_step.device_ids is None
    assert isinstance(d_step, DDP) and isinstance(d_step.module, DiscriminatorStep) and d_step.device_ids is None
    # each rank owns its own shard of the centres: DDP neither broadcasts nor averages them
    assert g_step.parameters_to_ignore == {"classifier.weight"}
    assert not any(p.requires_grad for p in discriminator.parameters())  # until its own step
    # The generator step's wrapper must not wait for the discriminator's gradients, nor the
    # discriminator step's for the generator's: a wrapper still expecting gradients when the
    # next step starts fails it.
    batch = first_batch(trainer)
    for _ in range(2):
        parts = trainer.train_step(state, [batch])
    assert torch.isfinite(parts["total"]) and torch.isfinite(parts["d_loss"])


def test_a_compiled_run_compiles_the_generator_step(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(2, 2, 2), "train.compile=true"), tiny_faces, progress=False)
    state = trainer.build_stage(stage_named(trainer, "recognition"))
    assert isinstance(state.g_step, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(state.g_step._orig_mod, GeneratorStep)


def test_restore_puts_back_the_cuda_random_state_only_when_the_checkpoint_has_one(tiny_config, tiny_faces, monkeypatch):
    _, _, path = saved_run(tiny_config, tiny_faces, step=1)
    target = Trainer(tiny_config(stages(2, 2, 2), run="other"), tiny_faces, progress=False)
    target.nets.projection = nn.Linear(32, 8, bias=False)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    target.restore(path)  # written on a CPU: no CUDA state to put back
    assert restored == []
    read = ckpt.load_train_state
    monkeypatch.setattr(ckpt, "load_train_state", lambda p: {**read(p), "cuda_rng": ["state of gpu 0"]})
    target.restore(path)
    assert restored == [["state of gpu 0"]]


def test_resuming_restores_the_loss_scaler(tiny_config, tiny_faces):
    _, _, path = saved_run(tiny_config, tiny_faces, step=1)
    target = Trainer(tiny_config(stages(2, 2, 2), "optim.optimizer=sgd", run="other"), tiny_faces, progress=False)
    target.nets.projection = nn.Linear(32, 8, bias=False)
    _, _, train_state = target.restore(path)
    loaded = []
    target.scaler = types.SimpleNamespace(load_state_dict=loaded.append)  # fp16 runs only on a GPU
    target.load_optimisation_state(target.build_stage(stage_named(target, "recognition")), train_state)
    assert loaded == [train_state["scaler"]]


def test_set_trainable_handles_a_backbone_without_the_fixed_scale_bn(tiny_config, tiny_faces):
    trainer = Trainer(tiny_config(stages(1, 1, 1), "model.backbone=dlib_resnet", "model.input_size=64",
                              "model.width=1.0"),
                      tiny_faces, progress=False)
    assert not hasattr(trainer.nets.model.backbone.head, "features")
    trainer.set_trainable(stage_named(trainer, "recognition"))
    assert all(p.requires_grad for p in trainer.nets.model.backbone.head.parameters())


def test_load_model_never_reads_pretrained_weights(tiny_config, tiny_faces, monkeypatch):
    _, _, path = saved_run(tiny_config, tiny_faces, step=1)
    as_read = ckpt.config_from_dict

    def pretrained(data):  # the config of a run that started from SFace's weights
        cfg = as_read(data)
        object.__setattr__(cfg.model, "pretrained", "sface")
        return cfg

    built, build = [], ckpt.build_model
    monkeypatch.setattr(ckpt, "config_from_dict", pretrained)
    monkeypatch.setattr(ckpt, "build_model", lambda model_cfg, **kw: built.append(model_cfg.pretrained) or build(model_cfg, **kw))
    _, cfg, _ = load_model(path)
    assert built == [""] and cfg.model.pretrained == "sface"


@pytest.mark.parametrize("length, shown", [(299, 299), (300, 300), (301, None), (900, None)])
def test_load_model_keeps_a_mismatch_message_to_one_line_of_300_characters(tiny_config, tiny_faces, monkeypatch,
                                                                            length, shown):
    _, _, path = saved_run(tiny_config, tiny_faces, step=1)
    detail = ("Missing key(s) in state_dict: " + "x" * length)[:length]

    def refuse(self, state, *args, **kwargs):
        raise RuntimeError(f"Error(s) in loading state_dict for MEER:\n\t{detail[:100]}\n\t{detail[101:]}")

    monkeypatch.setattr(nn.Module, "load_state_dict", refuse)
    with pytest.raises(ValueError) as err:
        load_model(path)
    message = str(err.value).split("describes: ", 1)[1]
    expected = detail[:100] + " " + detail[101:]
    assert message == (expected if shown else expected[:297] + "...")
