"""A checkpoint with another checkpoint's occlusion refiner: every other weight stays the first's.

    python scripts/swap_refiner.py runs/gen/checkpoints/step_00010500 runs/occ/checkpoints/best runs/gen+occ

The refiner trains on a frozen model (``bench/train_occlusion.py``) and the generator on a frozen
recogniser and refiner (``bench/pretrain_generator.py``), so the two can be trained side by side
from the same release and put together afterwards. Writes a run folder (``OUT/checkpoints/...``)
that every meer command loads; its state records where the refiner came from.
"""

from __future__ import annotations

import argparse
import dataclasses

from meer.inference.checkpoint import flat_state, load_model, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint or release: every weight but the refiner")
    parser.add_argument("refiner", help="checkpoint or release whose occlusion refiner is taken")
    parser.add_argument("out", help="run folder to write")
    args = parser.parse_args()
    try:
        model, cfg, state = load_model(args.checkpoint)
        donor, _, _ = load_model(args.refiner)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if donor.occlusion_refiner is None:
        raise SystemExit(f"error: {args.refiner} has no occlusion refiner")
    if model.occlusion_refiner is None:
        raise SystemExit(f"error: {args.checkpoint} has no occlusion refiner to replace")
    model.occlusion_refiner.load_state_dict(donor.occlusion_refiner.state_dict())
    state = {k: v for k, v in state.items() if k != "format_version"}
    state.update(config=dataclasses.asdict(cfg), occlusion_refiner_from=args.refiner, weights_from=args.checkpoint)
    path = save_checkpoint(args.out, f"step_{int(state.get('step', 0)):08d}", flat_state({"model": model}), {}, state)
    print(f"wrote {path}: {args.checkpoint} with the occlusion refiner of {args.refiner}")


if __name__ == "__main__":
    main()
