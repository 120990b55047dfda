"""The speed targets in one run: MEER's training steps against an ArcFace step, embedding against
the bare backbone, mask rendering on one core; plus peak memory and ONNX Runtime latency.

    python bench/throughput.py                      # CPU, the tiny config (48x48, IResNet-18 x0.25)
    python bench/throughput.py --profile-top 8      # ... and where each step's time goes
    python bench/throughput.py --cuda               # CUDA: IResNet-50, 112x112, batch 128, bf16

Each measurement runs in a fresh subprocess so that its peak memory is its own (CPU: peak RSS
of the process; CUDA: ``torch.cuda.max_memory_allocated``). Prints Markdown tables with each
ratio next to its target (issue 17). ``--profile-top N`` adds, per training step, the N
operators with the most self time (``torch.profiler``, averaged over the timed steps).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

SYSTEMS = {
    # name: (config layers, stage index to time)
    "ArcFace": (["{base}", "{arcface}"], 0),
    "MEER stage 1 (recognition)": (["{base}"], 0),
    "MEER stage 2 (synthesis)": (["{base}"], 1),
    "MEER stage 3 (joint)": (["{base}"], 2),
}
# the targets: a ratio to ArcFace's step (at most), to the bare backbone (at most), faces/s (at least)
TARGETS = {"MEER stage 1 (recognition)": 1.10, "MEER stage 3 (joint)": 2.20, "embedding": 1.05, "masks": 1000}
PROFILES = {
    "cpu": {"base": "tiny", "arcface": "tiny-arcface-maskaug", "batch": 64, "warmup": 3, "steps": 10,
            "device": "cpu", "overrides": ["train.device=cpu"]},
    "cuda": {"base": "iresnet50", "arcface": "iresnet50-arcface-maskaug", "batch": 128, "warmup": 10, "steps": 30,
             "device": "cuda", "overrides": ["train.device=cuda", "train.precision=bf16", "train.channels_last=true"]},
}


def measure_training(layers: list[str], stage_index: int, profile: dict, top: int = 0) -> dict:
    import numpy as np
    import torch

    from meer.config import load_config
    from meer.data.faceset import FaceSet, arcface_template
    from meer.train.trainer import Trainer

    cfg = load_config(layers, [*profile["overrides"], f"data.batch_size={profile['batch']}",
                               "data.source=synthetic", "train.out_dir=/tmp/meer-throughput"])
    size, batch = cfg.model.input_size, profile["batch"]
    rng = np.random.default_rng(0)
    num_classes = 1000
    faces = FaceSet(  # one face per identity: only the class count matters for speed
        rng.integers(0, 255, (num_classes, size, size, 3), dtype=np.uint8),
        np.repeat(arcface_template(size)[None], num_classes, 0),
        np.arange(num_classes),
    )
    trainer = Trainer(cfg, faces, progress=False)
    state = trainer.build_stage(cfg.stages[stage_index])
    device = trainer.env.device
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    occlusion = torch.zeros(batch, 1, size, size, device=device)
    occlusion[:, :, size // 2 :] = 1
    sample = {
        "masked": images, "clean": images.clone(), "occlusion": occlusion,
        "mask_type": torch.ones(batch, dtype=torch.long, device=device),
        "label": torch.arange(batch, device=device) % num_classes,
    }
    sample = trainer.to_device(sample)
    for _ in range(profile["warmup"]):
        trainer.train_step(state, [sample])
    times = []  # each step on its own: the median ignores the odd step a busy neighbour slowed
    for _ in range(profile["steps"]):
        sync(device)
        start = time.perf_counter()
        trainer.train_step(state, [sample])
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    out = {"images_per_s": batch / seconds, "step_ms": seconds * 1000, "peak_mb": peak_mb(device)}
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as flops:  # the work itself, which no neighbour changes
        trainer.train_step(state, [sample])
    out["gflops"] = flops.get_total_flops() / 1e9
    if top:
        out["top"] = top_operators(lambda: trainer.train_step(state, [sample]), profile["steps"], top, device)
    return out


def top_operators(step, steps: int, top: int, device) -> list[tuple[str, float, float]]:
    """``(operator, self ms per step, share of the step %)`` of the ``top`` costliest operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total = sum(getattr(e, attribute) for e in events)
    return [(e.key, getattr(e, attribute) / steps / 1000, 100 * getattr(e, attribute) / total) for e in events[:top]]


def measure_inference(layers: list[str], profile: dict, overrides: tuple[str, ...] = (), top: int = 0) -> dict:
    """Embedding latency for one batch: MEER (backbone, decoupling module, head) against the bare
    backbone with its head, in eager PyTorch; and MEER in ONNX Runtime (CPU), fp32."""
    import tempfile

    import torch
    import torch.nn.functional as F

    from meer.config import load_config
    from meer.export import EmbeddingNetwork, export_onnx
    from meer.models.meer import build_model

    cfg = load_config(layers, [*profile["overrides"], *overrides])
    device = torch.device(profile["device"])
    network = EmbeddingNetwork(build_model(cfg.model)).eval().to(device)
    backbone = network.model.backbone
    size, batch = cfg.model.input_size, 16 if overrides else profile["batch"]
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    rounds = {"warmup": 2, "steps": 5} if device.type == "cpu" else {"warmup": 10, "steps": 50}
    with torch.no_grad():
        # alternating, the best of 5 rounds each: a change in the machine's load falls on both
        eager, bare = [], []
        for _ in range(5):
            eager.append(timed(lambda: network(images), rounds, device))
            bare.append(timed(lambda: F.normalize(backbone(images)), rounds, device))
        eager, bare = min(eager), min(bare)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counted:
            network(images)
        with FlopCounterMode(display=False) as counted_bare:
            F.normalize(backbone(images))
        flop_ratio = counted.get_total_flops() / counted_bare.get_total_flops()
    onnx = math.nan  # ONNX Runtime on the CPU only: beside a GPU's times it would say nothing
    if device.type == "cpu":
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(network, size, f"{tmp}/embed.onnx")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feed = {"images": images.numpy()}
            onnx = timed(lambda: session.run(None, feed), rounds, device)
    out = {"eager_ms": eager * 1000, "backbone_ms": bare * 1000, "onnx_ms": onnx * 1000, "batch": batch,
           "flop_ratio": flop_ratio, "model": f"{cfg.model.backbone} x{cfg.model.width} at {size}, batch {batch}"}
    if top:
        with torch.no_grad():
            out["top"] = top_operators(lambda: network(images), rounds["steps"], top, device)
    return out


def measure_masks(count: int = 2000, size: int = 112) -> dict:
    """Masks rendered per second on one core (as a DataLoader worker has)."""
    import cv2
    import torch
    from mask_throughput import masks_per_second  # bench/, this script's folder

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    return {"faces_per_s": masks_per_second(count, size), "size": size}


def timed(fn, rounds: dict, device) -> float:
    for _ in range(rounds["warmup"]):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(rounds["steps"]):
        fn()
    sync(device)
    return (time.perf_counter() - start) / rounds["steps"]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# the shipped default model's network (SFace at 112), for the embedding ratio users see
SHIPPED = ("model.backbone=sface", "model.input_size=112", "model.width=1.0", "model.embedding_dim=128")


def child(args: argparse.Namespace) -> None:
    profile = dict(PROFILES[args.profile])
    profile["overrides"] = [*profile["overrides"], *args.overrides]
    if args.what == "masks":
        print(json.dumps(measure_masks()))
    elif args.what.startswith("inference"):
        overrides = SHIPPED if args.what == "inference-shipped" else ()
        print(json.dumps(measure_inference([profile["base"]], profile, overrides, args.top)))
    else:
        template, stage = SYSTEMS[args.what]
        layers = [t.format(**profile) for t in template]
        print(json.dumps(measure_training(layers, stage, profile, args.top)))


def run_child(profile: str, what: str, top: int = 0, overrides: tuple[str, ...] = ()) -> dict:
    sets = [arg for override in overrides for arg in ("--set", override)]
    out = subprocess.run([sys.executable, __file__, "--child", what, "--profile", profile, "--profile-top", str(top),
                          *sets], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true", help="the CUDA profile (IResNet-50, 112, batch 128, bf16)")
    parser.add_argument("--child", dest="what", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--profile-top", dest="top", type=int, default=0, metavar="N",
                        help="also list the N operators with the most self time in each training step")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="measure the training steps in R rounds, in turn, and report each one's fastest")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every measurement, e.g. --set train.channels_last=false")
    parser.add_argument("--only", choices=["training", "inference", "masks"], action="append",
                        help="measure only these (default: all)")
    args = parser.parse_args()
    if args.what:
        child(args)
        return
    profile = "cuda" if args.cuda else "cpu"
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if args.cuda else f"{platform.processor() or platform.machine()} CPU"
    print(f"profile {profile}: {PROFILES[profile]['base']}, batch {PROFILES[profile]['batch']}, "
          f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads"
          + "".join(f", --set {o}" for o in args.overrides) + "\n")
    only = set(args.only or ["training", "inference", "masks"])
    if "training" in only:
        training(profile, args)
    if "inference" in only:
        inference(profile, args)
    if "masks" in only:
        masks = run_child(profile, "masks")
        target = TARGETS["masks"]
        print(f"\nmask rendering at {masks['size']}x{masks['size']}, one core: {masks['faces_per_s']:.0f} faces/s "
              f"(target >= {target}: {'met' if masks['faces_per_s'] >= target else 'not met'})")


def training(profile: str, args: argparse.Namespace) -> None:
    # Rounds in turn (ArcFace, stage 1, 2, 3, ArcFace, ...), each system's fastest round kept: a
    # busy neighbour on a shared machine only ever adds time, and a change in the machine's load
    # falls on every system instead of on one.
    runs = {name: [] for name in SYSTEMS}
    for round_index in range(args.repeat):
        for name in SYSTEMS:
            runs[name].append(run_child(profile, name, args.top if round_index == 0 else 0, args.overrides))
    rows = {}
    for name, results in runs.items():
        best = min(results, key=lambda r: r["step_ms"])
        rows[name] = {**best, "top": results[0].get("top"), "all_ms": [r["step_ms"] for r in results]}
    base = rows["ArcFace"]
    print("| training step | images/s | ms/step | peak memory MB | GFLOP/step | FLOP ratio | time ratio to ArcFace "
          "| target | met |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in rows.items():
        ratio = r["step_ms"] / base["step_ms"]
        target = TARGETS.get(name)
        goal = f"<= {target:.2f} | {'yes' if ratio <= target else 'no'}" if target else "| "
        print(f"| {name} | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | {r['peak_mb']:.0f} | {r['gflops']:.1f} | "
              f"{r['gflops'] / base['gflops']:.2f} | {ratio:.2f} | {goal} |")
    if args.repeat > 1:
        print(f"\nms/step (median step) in each of the {args.repeat} rounds (the table shows the fastest):")
        for name, r in rows.items():
            print(f"  {name:<28} {', '.join(f'{ms:.1f}' for ms in r['all_ms'])}")
    for name, r in rows.items():
        if r.get("top"):
            print(f"\n{name}: operators with the most self time, per step")
            for op, ms, share in r["top"]:
                print(f"  {op:<40} {ms:8.1f} ms  {share:5.1f}%")


def inference(profile: str, args: argparse.Namespace) -> None:
    target = TARGETS["embedding"]
    print("\n| embedding, eager fp32, one batch | MEER ms | bare backbone ms | FLOP ratio | time ratio | target | met "
          "| ONNX Runtime ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    rows = [run_child(profile, what, args.top, args.overrides) for what in ("inference", "inference-shipped")]
    for r in rows:
        ratio = r["eager_ms"] / r["backbone_ms"]
        onnx = "n/a (CPU only)" if math.isnan(r["onnx_ms"]) else f"{r['onnx_ms']:.1f}"
        print(f"| {r['model']} | {r['eager_ms']:.1f} | {r['backbone_ms']:.1f} | {r['flop_ratio']:.3f} | {ratio:.3f} "
              f"| <= {target:.2f} | {'yes' if ratio <= target else 'no'} | {onnx} |")
    for r in rows:
        if r.get("top"):
            print(f"\nembedding, {r['model']}: operators with the most self time, per batch")
            for op, ms, share in r["top"]:
                print(f"  {op:<40} {ms:8.2f} ms  {share:5.1f}%")


if __name__ == "__main__":
    main()
