"""Training throughput and peak memory: ArcFace alone vs MEER's stages 1, 2 and 3, plus embedding
inference latency in eager PyTorch vs ONNX Runtime.

    python bench/throughput.py                      # CPU, the tiny config (48x48, IResNet-18 x0.25)
    python bench/throughput.py --cuda               # CUDA: IResNet-50, 112x112, batch 128, bf16

Each measurement runs in a fresh subprocess so that its peak memory is its own (CPU: peak RSS
of the process; CUDA: ``torch.cuda.max_memory_allocated``). Prints a Markdown table with the
ratios to ArcFace.
"""

from __future__ import annotations

import argparse
import json
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
PROFILES = {
    "cpu": {"base": "tiny", "arcface": "tiny-arcface-maskaug", "batch": 64, "warmup": 3, "steps": 10,
            "overrides": ["train.device=cpu"]},
    "cuda": {"base": "iresnet50", "arcface": "iresnet50-arcface-maskaug", "batch": 128, "warmup": 10, "steps": 30,
             "overrides": ["train.device=cuda", "train.precision=bf16", "train.channels_last=true"]},
}


def measure_training(layers: list[str], stage_index: int, profile: dict) -> dict:
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
    sync(device)
    start = time.perf_counter()
    for _ in range(profile["steps"]):
        trainer.train_step(state, [sample])
    sync(device)
    seconds = (time.perf_counter() - start) / profile["steps"]
    return {"images_per_s": batch / seconds, "step_ms": seconds * 1000, "peak_mb": peak_mb(device)}


def measure_inference(layers: list[str], profile: dict) -> dict:
    """Embedding latency for one batch: eager PyTorch vs ONNX Runtime (CPU), fp32."""
    import tempfile

    import torch

    from meer.config import load_config
    from meer.export import EmbeddingNetwork, export_onnx
    from meer.models.meer import build_model

    cfg = load_config(layers, profile["overrides"])
    network = EmbeddingNetwork(build_model(cfg.model)).eval()
    size, batch = cfg.model.input_size, profile["batch"]
    images = torch.rand(batch, 3, size, size) * 2 - 1
    with torch.no_grad():
        eager = timed(lambda: network(images), profile)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(network, size, f"{tmp}/embed.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"images": images.numpy()}
        onnx = timed(lambda: session.run(None, feed), profile)
    return {"eager_ms": eager * 1000, "onnx_ms": onnx * 1000, "batch": batch}


def timed(fn, profile: dict) -> float:
    for _ in range(profile["warmup"]):
        fn()
    start = time.perf_counter()
    for _ in range(profile["steps"]):
        fn()
    return (time.perf_counter() - start) / profile["steps"]


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


def child(args: argparse.Namespace) -> None:
    profile = PROFILES[args.profile]
    if args.what == "inference":
        layers = [profile["base"]]
        print(json.dumps(measure_inference(layers, profile)))
        return
    template, stage = SYSTEMS[args.what]
    layers = [t.format(**profile) for t in template]
    print(json.dumps(measure_training(layers, stage, profile)))


def run_child(profile: str, what: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, "--profile", profile],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true", help="the CUDA profile (IResNet-50, 112, batch 128, bf16)")
    parser.add_argument("--child", dest="what", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what:
        child(args)
        return
    profile = "cuda" if args.cuda else "cpu"
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if args.cuda else f"{platform.processor() or platform.machine()} CPU"
    print(f"profile {profile}: {PROFILES[profile]['base']}, batch {PROFILES[profile]['batch']}, "
          f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads\n")
    rows = {name: run_child(profile, name) for name in SYSTEMS}
    base = rows["ArcFace"]
    print("| training step | images/s | ms/step | peak memory MB | time ratio to ArcFace |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        ratio = r["step_ms"] / base["step_ms"]
        print(f"| {name} | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | {r['peak_mb']:.0f} | {ratio:.2f} |")
    inference = run_child(profile, "inference")
    print(f"\n| embedding inference, batch {inference['batch']} (CPU, fp32) | ms/batch | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| PyTorch eager | {inference['eager_ms']:.1f} | 1.00 |")
    print(f"| ONNX Runtime | {inference['onnx_ms']:.1f} | {inference['onnx_ms'] / inference['eager_ms']:.2f} |")


if __name__ == "__main__":
    main()
