"""``meer export``: release files from a checkpoint — inference weights (safetensors + JSON) and,
with ``--onnx``, the embedding network and the unmasking generator as ONNX, each checked
against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export release weights and ONNX models", description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint folder or run folder")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--onnx", action="store_true", help="also write embed.onnx and unmask.onnx (needs meer[onnx])")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size; "
                        "they are read back into float32)")
    parser.add_argument("--int8", nargs="*", default=[], metavar="NAME",
                        help="store these 2-D weights as block-wise int8 (e.g. backbone.head.fc.weight)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from meer.calibration import read_calibration, write_calibration
    from meer.cli import MeerError
    from meer.export import EmbeddingNetwork, UnmaskNetwork, export_onnx, onnx_max_abs_diff
    from meer.inference.checkpoint import find_checkpoint, load_model, quantize_int8
    from meer.io import atomic_write, atomic_write_json

    checkpoint = find_checkpoint(args.checkpoint)
    model, cfg, state = load_model(checkpoint)
    out = Path(args.out)
    tensors = {k: (v.half() if args.half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    for name in args.int8:
        if name not in tensors or tensors[name].dim() != 2:
            raise MeerError(f"--int8 {name}: not a 2-D weight of this model")
        tensors[f"{name}.qint8"], tensors[f"{name}.qscale"] = quantize_int8(tensors.pop(name))
    atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "meer-model-1"}))
    atomic_write_json(out / "model.json", {"config": cfg.to_dict(), "source": str(checkpoint),
                                            "versions": state.get("versions", {})})
    print(f"wrote {out / 'model.safetensors'} and {out / 'model.json'}")
    calibration = read_calibration(checkpoint)
    if calibration is not None:
        write_calibration(out, calibration)
        print(f"wrote {out / 'calibration.json'} (threshold {calibration.threshold:.4f}, {calibration.protocol})")
    if args.onnx:
        size = cfg.model.input_size
        images = torch.rand(3, 3, size, size) * 2 - 1
        networks = {"embed": EmbeddingNetwork(model)}
        if model.generator is not None:
            networks["unmask"] = UnmaskNetwork(model)
        for name, network in networks.items():
            path = export_onnx(network, size, out / f"{name}.onnx")
            diffs = ", ".join(f"{d:.2e}" for d in onnx_max_abs_diff(network, path, images))
            print(f"wrote {path} (max abs difference to PyTorch: {diffs})")
    return 0
