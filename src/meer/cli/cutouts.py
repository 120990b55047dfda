"""``meer cutouts``: cut the real masks out of a prepared cache's masked photos, for training
(``data.real_masks``: other training faces then wear them, see meer.data.cutouts)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cutouts", help="cut real masks out of masked photos for training", description=__doc__)
    parser.add_argument("cache", help="a cache written by `meer prepare` whose rows flag real masked photos")
    parser.add_argument("-o", "--output", required=True, help="file to write (.safetensors)")
    parser.add_argument("-m", "--checkpoint", help="model whose predicted occlusion draws the cut "
                        "(default: the model meer ships)")
    parser.add_argument("--threshold", type=float, default=0.5, help="occlusion probability of the cut (default 0.5)")
    parser.add_argument("--sheet", metavar="PNG", help="also write a picture of the first 48 cuts "
                        "(of --output), to look at")
    parser.add_argument("--validation", metavar="FILE", help="write the masks of a held-out share of the "
                        "people here instead, for choices made on validation (their masks are not in --output)")
    parser.add_argument("--validation-share", type=float, default=0.25, metavar="F",
                        help="share of the people held out with --validation, drawn from a fixed seed (default 0.25)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from meer.api.model import default_model
    from meer.cli import MeerError
    from meer.data.cache import FaceCache
    from meer.data.cutouts import cut_out
    from meer.inference.checkpoint import find_checkpoint, load_model

    if not 0 < args.threshold < 1:
        raise MeerError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    if not 0 < args.validation_share < 1:
        raise MeerError(f"--validation-share must lie between 0 and 1, got {args.validation_share}")
    if args.validation and Path(args.validation).resolve() == Path(args.output).resolve():
        raise MeerError("--validation names the same file as --output: the held-out people's masks go to another file")
    if args.sheet and Path(args.sheet).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise MeerError(f"--sheet {args.sheet}: unknown image suffix {Path(args.sheet).suffix!r}; use .png or .jpg")
    cache = FaceCache.open(args.cache)
    rows = np.flatnonzero(cache.masked)
    if not len(rows):
        raise MeerError(f"{args.cache} flags no real masked photo (see meer prepare --masked)")
    model, cfg, _ = load_model(find_checkpoint(args.checkpoint) if args.checkpoint else default_model())
    if not cfg.model.decouple:
        raise MeerError("the model has no decoupling module, so it predicts no occlusion to cut along")
    if cfg.model.input_size != cache.faces.images.shape[1]:
        raise MeerError(f"the model takes {cfg.model.input_size} px faces, the cache holds "
                        f"{cache.faces.images.shape[1]} px crops")
    splits = {args.output: rows}
    if args.validation:
        held_out = held_out_people(cache.faces.labels[rows], args.validation_share)
        if held_out.all() or not held_out.any():
            raise MeerError(f"{args.cache}: the masked photos are of one person, so none can be held out for "
                            "--validation")
        splits = {args.output: rows[~held_out], args.validation: rows[held_out]}
    for output, kept in splits.items():
        cutouts = cut_out(model, np.asarray(cache.faces.images)[kept], args.threshold)
        path = cutouts.save(output)
        print(f"wrote {path}: {len(cutouts)} masks cut out of {len(kept)} masked photos of "
              f"{len(np.unique(cache.faces.labels[kept]))} people ({len(kept) - len(cutouts)} skipped: "
              "no plausible mask region)")
        if args.sheet and output == args.output:
            write_sheet(cutouts, args.sheet)
            print(f"wrote {args.sheet}")
    return 0


def held_out_people(labels, share: float, seed: int = 0):
    """bool per row: whether its person is among the ``share`` of the people drawn (from
    ``seed``) for validation; at least one person on each side when there are two."""
    import numpy as np

    people = np.random.default_rng(seed).permutation(np.unique(labels))
    count = min(max(round(share * len(people)), 1), len(people) - 1) if len(people) > 1 else 0
    return np.isin(labels, people[:count])


def write_sheet(cutouts, path: str, count: int = 48, per_row: int = 8) -> None:
    """Each cut: the photo, and the mask alone on grey."""
    import numpy as np

    from meer.cli.unmask import save_image

    tiles = []
    for image, alpha in zip(cutouts.images[:count], cutouts.alpha[:count]):
        weight = alpha[..., None].astype(np.float32) / 255
        alone = (weight * image + (1 - weight) * 128).astype(np.uint8)
        tiles.append(np.concatenate([image, alone], axis=1))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % per_row)
    sheet = np.concatenate([np.concatenate(tiles[i : i + per_row], axis=1) for i in range(0, len(tiles), per_row)])
    save_image(path, sheet)
