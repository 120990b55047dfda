"""``meer embed DIR -o FILE``: identity embeddings of every photo in a folder, for your own scripts.

FILE is a safetensors file: tensor ``embeddings`` float32 [N, D] (unit norm) and, in its header
metadata, ``paths`` (JSON list: row i's photo, relative to the folder it was found in) and
``model`` (the checkpoint's fingerprint). Read it with ``meer.api.load_embeddings(FILE)`` or
``safetensors.safe_open``. Photos without a usable face are skipped and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from meer.cli.inference import add_model_arguments, load_from_args, print_json

FORMAT = "meer-embeddings-1"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "embed", help="embed every photo in folders into one safetensors file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="DIR", help="folders (searched recursively) or photos")
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="safetensors file to write")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def collect(inputs: list[str]) -> list[tuple[Path, str]]:
    """``(file, name)`` for every photo: folders are walked, names are relative to them."""
    from meer.api import IMAGE_SUFFIXES

    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            # os.walk, unlike Path.rglob before Python 3.13, follows symlinked sub-folders
            files = sorted(
                Path(root, name)
                for root, _, names in os.walk(item, followlinks=True)
                for name in names
                if Path(name).suffix.lower() in IMAGE_SUFFIXES
            )
            found += [(p, p.relative_to(item).as_posix()) for p in files]
        elif item.is_file():
            found.append((item, item.as_posix()))
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not found:
        raise ValueError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    return found


def run(args: argparse.Namespace) -> int:
    from meer.api import ImageError, NoFaceError, save_embeddings
    from meer.cli import MeerError

    photos = collect(args.inputs)
    model = load_from_args(args)
    faces, names, skipped = [], [], []
    for path, name in photos:
        try:
            faces.append(model.face(path, aligned=args.aligned))
            names.append(name)
        except (ImageError, NoFaceError) as err:
            skipped.append({"path": str(path), "reason": str(err)})
    if not faces or not args.json:  # JSON lists them in its answer
        for item in skipped:
            print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    if not faces:
        raise MeerError(f"none of the {len(photos)} photos had a usable face")
    embeddings = model.embed(faces)
    metadata = {"format": FORMAT, "paths": json.dumps(names), "model": model.fingerprint}
    out = save_embeddings(args.output, embeddings, metadata)
    if args.json:
        print_json({"output": str(out), "count": len(names), "dim": int(embeddings.shape[1]), "skipped": skipped})
        return 0
    print(f"{len(names)} embeddings ({embeddings.shape[1]}-d) written to {out}; {len(skipped)} photos skipped")
    return 0
