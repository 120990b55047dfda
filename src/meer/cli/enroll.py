"""``meer enroll DIR -o GALLERY``: a gallery of people from DIR/<person>/*.jpg, for ``meer identify``.

GALLERY ending in .db, .sqlite or .sqlite3 is a gallery database (``meer.gallery``): each photo
keeps its own template, masked or not (the model's verdict), people already in it are left as
they are (and reported), and ``meer gallery`` lists, renames and deletes them. Any other GALLERY
is a safetensors file with one template per person, the mean of their photos' embeddings.
Either is tied to the model that made it. Photos without a usable face are skipped and reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    from meer.gallery import is_database

    model = load_from_args(args)
    if is_database(args.output):
        return enroll_into_database(args, model)
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


def enroll_into_database(args: argparse.Namespace, model) -> int:
    from meer.api import ImageError, NoFaceError, image_files
    from meer.cli import MeerError
    from meer.gallery import check_name, enroll_photos, open_gallery

    root = Path(args.folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if not folders:
        raise ValueError(f"{root} has no sub-folders: expected {root}/<person>/<photo>.jpg")
    names = {folder: check_name(folder.name) for folder in folders}  # every name checked before any is written
    enrolled, skipped = {}, []
    with open_gallery(args.output, model) as gallery:
        for folder, name in names.items():
            if name in gallery:
                skipped.append({"input": str(folder), "reason": f"{name!r} is already enrolled"})
                continue
            faces = []
            for photo in image_files(folder):
                try:
                    faces.append(model.face(photo, args.aligned))
                except (ImageError, NoFaceError) as err:
                    skipped.append({"input": str(photo), "reason": str(err)})
            if not faces:
                skipped.append({"input": str(folder), "reason": "no usable photo"})
                continue
            enrolled[name] = enroll_photos(gallery, model, name, faces).to_dict()
    failed = not enrolled and any(not item["reason"].endswith("is already enrolled") for item in skipped)
    if failed or not args.json:  # JSON lists them in its answer
        for item in skipped:
            print(f"skipped {item['input']}: {item['reason']}", file=sys.stderr)
    if failed:
        raise MeerError(f"nobody could be enrolled into {args.output}: no usable photo in any new person's folder")
    if args.json:
        print_json({"output": args.output, "people": enrolled, "skipped": skipped})
        return 0
    photos = sum(person["templates"] for person in enrolled.values())
    print(f"{len(enrolled)} people ({photos} photos) enrolled into {args.output}; {len(skipped)} skipped")
    return 0
