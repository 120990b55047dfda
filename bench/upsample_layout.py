"""Bilinear upsampling in the default (NCHW) layout against ``meer.models.layers.upsample``
(the same resize in the channels-last layout): the op on the maps MEER resizes, and IResNet-50's
decoupling module at batch 128, with each. Prints milliseconds (best of N) and the largest
difference between the two outputs (0 where they are identical).

    python bench/upsample_layout.py            # CPU
    python bench/upsample_layout.py --cuda
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import meer.models.decouple as decouple
from meer.config import load_config
from meer.models.layers import upsample
from meer.models.meer import build_model

# (batch, channels, side) -> side x 2: the decoupling module at IResNet-50 (512 channels, 7 -> 14),
# the generator's decoders (256 at 14 -> 28, 128 at 28 -> 56)
SHAPES = [(128, 512, 7), (16, 512, 7), (32, 256, 14), (32, 128, 28)]


def plain(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def best_ms(fn, inputs: tuple, device: torch.device, repeat: int) -> float:
    fn(*inputs)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; best of {args.repeat}\n")
    print("| input [B, C, h, w] -> 2h x 2w | NCHW kernel ms | channels-last (upsample) ms | max abs difference |")
    print("| --- | ---: | ---: | --- |")
    with torch.no_grad():
        for batch, channels, side in SHAPES:
            x = torch.randn(batch, channels, side, side, device=device)
            size = (2 * side, 2 * side)
            diff = (plain(x, size) - upsample(x, size)).abs().max().item()
            slow, fast = (best_ms(resize, (x, size), device, args.repeat) for resize in (plain, upsample))
            print(f"| {batch}, {channels}, {side}, {side} | {slow:.2f} | {fast:.2f} | {diff:.1e} |")

        cfg = load_config(["iresnet50"], [])
        model = build_model(cfg.model).to(device).eval()
        maps = model.backbone.forward_features(torch.rand(128, 3, 112, 112, device=device) * 2 - 1)
        fast = decouple.upsample
        rows = {}
        for name, resize in [("NCHW kernel", plain), ("channels-last (upsample)", fast)]:
            decouple.upsample = resize
            rows[name] = (best_ms(model.decouple, (maps[3], maps[2]), device, args.repeat),
                          model.decouple(maps[3], maps[2]).identity)
        decouple.upsample = fast
    first, second = (identity for _, identity in rows.values())
    diff = (first - second).abs().max().item()
    print("\nIResNet-50's decoupling module, batch 128: "
          + ", ".join(f"{name} {ms:.1f} ms" for name, (ms, _) in rows.items()) + f"; max abs difference {diff:.1e}")


if __name__ == "__main__":
    main()
