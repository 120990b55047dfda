"""``meer verify A B``: are two photos of the same person?"""

from __future__ import annotations

import argparse

from meer.cli.inference import add_model_arguments, calibration_note, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "verify", help="decide whether two photos show the same person", description=__doc__,
        epilog="Several faces in a photo: the main one (largest, near the centre) is used.",
    )
    parser.add_argument("first", metavar="A", help="first photo")
    parser.add_argument("second", metavar="B", help="second photo")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_from_args(args)
    result = model.verify(args.first, args.second, aligned=args.aligned)
    if args.json:
        print_json({
            "same": result.same,
            "score": result.score,
            "threshold": result.threshold,
            "calibrated": result.calibrated,
            "setting": result.setting,
            "masked": list(result.masked),
            "faces": [face.to_dict() for face in result.faces],
        })
        return 0
    verdict = "same person" if result.same else "different people"
    sign = ">=" if result.same else "<"
    print(f"{verdict}: score {result.score:.4f} {sign} threshold {result.threshold:.4f} "
          f"({result.setting}, {calibration_note(model)})")
    return 0
