"""``meer enroll DIR -o GALLERY``: a gallery of people from DIR/<person>/*.jpg, for ``meer identify``.

Each person gets one template: the mean of their photos' embeddings. GALLERY is a safetensors
file (embeddings, with names in its header metadata) tied to the model that made it. Photos
without a usable face are skipped and reported.
"""

from __future__ import annotations

import argparse
import sys

from meer.cli.inference import add_model_arguments, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "enroll", help="build a gallery of people from DIR/<person>/*.jpg", description=__doc__,
    )
    parser.add_argument("folder", metavar="DIR", help="one sub-folder of photos per person")
    parser.add_argument("--output", "-o", required=True, metavar="GALLERY", help="gallery file to write")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_from_args(args)
    gallery = model.enroll(args.folder, aligned=args.aligned, skip_errors=True)
    out = gallery.save(args.output)
    skipped = [{"input": source, "reason": reason} for source, reason in gallery.skipped]
    if args.json:
        print_json({
            "output": str(out),
            "people": dict(zip(gallery.names, gallery.counts)),
            "skipped": skipped,
        })
        return 0
    for item in skipped:
        print(f"skipped {item['input']}: {item['reason']}", file=sys.stderr)
    print(f"{len(gallery)} people ({sum(gallery.counts)} photos) enrolled into {out}; {len(skipped)} skipped")
    return 0
