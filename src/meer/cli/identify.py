"""``meer identify IMG --gallery GALLERY``: who in the gallery is this?

With a gallery database (``.db``, from ``meer enroll`` or ``meer gallery``) the answer is open-set:
a person, or "unknown" when nobody reaches the identification threshold (calibrated with
``meer.calibration.calibrate_identification``; else the verification threshold, flagged).
"""

from __future__ import annotations

import argparse

from meer.cli.inference import add_model_arguments, calibration_note, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "identify", help="rank the people of a gallery by similarity to a photo", description=__doc__,
        epilog="The best match counts as identified only if its score reaches the model's threshold.",
    )
    parser.add_argument("image", metavar="IMG", help="probe photo")
    parser.add_argument("--gallery", "-g", required=True, help="gallery file from `meer enroll`")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="how many matches to list (default: 5)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meer.api import Gallery
    from meer.gallery import is_database

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    if is_database(args.gallery):
        return identify_in_database(args)
    gallery = Gallery.load(args.gallery)
    model = load_from_args(args)
    matches = model.identify(args.image, gallery, top_k=args.top_k, aligned=args.aligned)
    identified = matches[0].name if matches[0].score >= model.threshold else None
    if args.json:
        print_json({
            "identified": identified,
            "matches": [{"name": m.name, "score": m.score} for m in matches],
            "threshold": model.threshold,
            "calibrated": model.calibrated,
        })
        return 0
    if identified:
        print(f"identified: {identified} (score {matches[0].score:.4f}, {calibration_note(model)})")
    else:
        print(f"not identified: no one reaches the threshold {model.threshold:.4f} ({calibration_note(model)})")
    for rank, match in enumerate(matches, 1):
        print(f"{rank:3d}. {match.name}  {match.score:.4f}")
    return 0


def identify_in_database(args: argparse.Namespace) -> int:
    from meer.gallery import identify_photo, open_gallery

    model = load_from_args(args)
    with open_gallery(args.gallery, model, create=False) as gallery:
        answer = identify_photo(gallery, model, args.image, top_k=args.top_k, aligned=args.aligned)
    if args.json:
        print_json(answer.to_dict())
        return 0
    note = "calibrated for identification" if answer.calibrated else "not calibrated for identification: verification threshold"
    if answer.name is not None:
        print(f"identified: {answer.name} (score {answer.score:.4f} >= {answer.threshold:.4f}, {note})")
    else:
        print(f"unknown: nobody reaches the threshold {answer.threshold:.4f} ({note})")
    for rank, match in enumerate(answer.candidates, 1):
        print(f"{rank:3d}. {match.name}  {match.score:.4f}")
    return 0
