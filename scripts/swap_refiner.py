"""A checkpoint with another checkpoint's occlusion refiner (or generator): every other weight stays the first's.

    python scripts/swap_refiner.py runs/gen/checkpoints/step_00010500 runs/occ/checkpoints/best runs/gen+occ
    python scripts/swap_refiner.py src/meer/default_model generator.safetensors runs/gpu-gen --part generator

The refiner trains on a frozen model (``bench/train_occlusion.py``) and the generator on a frozen
recogniser and refiner (``bench/pretrain_generator.py``), so the two can be trained side by side
from the same release and put together afterwards. The donor is a checkpoint, a release, or a
``.safetensors`` file of the part's own weights (what a lent GPU sends back: the whole model's
checkpoint is too large); the part's settings (for a generator: its architecture, blend and occlusion
map) are the first checkpoint's, so the donor must have been trained with them. Writes a run folder (``OUT/checkpoints/...``) that every meer command
loads; its state records where the part came from.
"""

from __future__ import annotations

import argparse
import dataclasses

from safetensors import SafetensorError
from safetensors.torch import load_file

from meer.inference.checkpoint import flat_state, load_model, save_checkpoint

PARTS = {"occlusion_refiner": "occlusion refiner", "generator": "generator"}


def donor_weights(path: str, part: str) -> dict:
    if path.endswith(".safetensors"):
        return load_file(path)
    donor, _, _ = load_model(path)
    if getattr(donor, part) is None:
        raise SystemExit(f"error: {path} has no {PARTS[part]}")
    return getattr(donor, part).state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint or release: every weight but the part")
    parser.add_argument("donor", help="checkpoint, release or .safetensors file whose part is taken")
    parser.add_argument("out", help="run folder to write")
    parser.add_argument("--part", choices=sorted(PARTS), default="occlusion_refiner")
    args = parser.parse_args()
    try:
        model, cfg, state = load_model(args.checkpoint)
        weights = donor_weights(args.donor, args.part)
    except (OSError, ValueError, SafetensorError) as err:
        raise SystemExit(f"error: {err}") from None
    if getattr(model, args.part) is None:
        raise SystemExit(f"error: {args.checkpoint} has no {PARTS[args.part]} to replace")
    part = getattr(model, args.part)
    missing, unexpected = part.state_dict().keys() - weights.keys(), weights.keys() - part.state_dict().keys()
    if missing or unexpected:
        whole = any(k.startswith((f"{args.part}.", f"model.{args.part}.")) for k in weights)
        hint = ("a whole model's weights: give its checkpoint or release folder" if whole
                else f"{len(missing)} of its tensors missing (e.g. {min(missing, default='-')}), "
                     f"{len(unexpected)} unknown (e.g. {min(unexpected, default='-')})")
        raise SystemExit(f"error: {args.donor} is not the {PARTS[args.part]} of {args.checkpoint}: {hint}")
    try:
        part.load_state_dict(weights)
    except RuntimeError as err:  # the same names, other shapes: torch's second line names them
        raise SystemExit(f"error: {args.donor} is not the {PARTS[args.part]} of {args.checkpoint}: "
                         f"{' '.join(str(err).split())[:300]}") from None
    state = {k: v for k, v in state.items() if k != "format_version"}
    state.update({"config": dataclasses.asdict(cfg), f"{args.part}_from": args.donor, "weights_from": args.checkpoint})
    path = save_checkpoint(args.out, f"step_{int(state.get('step', 0)):08d}", flat_state({"model": model}), {}, state)
    print(f"wrote {path}: {args.checkpoint} with the {PARTS[args.part]} of {args.donor}")


if __name__ == "__main__":
    main()
