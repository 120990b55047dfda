"""``meer prepare``: detect, align and cache a face dataset (image folder, RecordIO or ``.bin``)."""

from __future__ import annotations

import argparse

from meer.cli import number
from meer.cli.inference import DETECTOR_HELP, detector_spec


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prepare", help="align a face dataset into a cache", description=__doc__,
        epilog="An interrupted run resumes where it stopped when started again with the same arguments.",
    )
    parser.add_argument("source", help="image folder <identity>/<image>, train.rec folder/file, or verification .bin")
    parser.add_argument("-o", "--output", required=True, help="cache folder to write")
    parser.add_argument("--size", type=number(int, 16), default=112, help="side of the aligned crops (default 112)")
    parser.add_argument(
        "--template", default="arcface", choices=["arcface", "dlib"],
        help="alignment: ArcFace's 5-point template (default) or dlib's face-chip framing "
        "(use with --size 150 for the dlib teacher and peer)",
    )
    parser.add_argument(
        "--detector", default="auto", type=detector_spec, help=DETECTOR_HELP + " (default: auto; for photos)",
    )
    parser.add_argument(
        "--no-face", default="skip", choices=["skip", "frame"],
        help="photos with no detected face: skip them (default), or, for tight face crops, take the "
        "frame as the face box and keep the crop, flagged",
    )
    parser.add_argument(
        "--masked", default=None, metavar="PATTERN",
        help="file names of photos showing a real mask, recorded per row for training (default: masked_*, "
        "case-insensitive; '' for none)",
    )
    parser.add_argument("--masked-list", metavar="FILE", help="a text file of the masked photos' keys "
                        "(<identity>/<file>, one per line), instead of --masked")
    parser.add_argument("--workers", type=number(int, 1), default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--no-resume", action="store_true", help="start over, deleting a previous run's files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meer.cli import MeerError
    from meer.data.prepare import prepare_dataset

    if args.masked_list and args.masked is not None:
        raise MeerError("--masked and --masked-list are two ways to name the masked photos: give one")
    report = prepare_dataset(
        args.source, args.output, size=args.size, template=args.template, detector=args.detector, no_face=args.no_face,
        resume=not args.no_resume, progress=not args.quiet, workers=args.workers,
        masked="masked_*" if args.masked is None else args.masked, masked_list=args.masked_list,
    )
    print(report.summary())
    reasons: dict[str, int] = {}
    for failure in report.failures:
        reasons[failure["reason"]] = reasons.get(failure["reason"], 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        print(f"  {count} failed: {reason}")
    if report.items and not report.aligned:
        raise MeerError(f"no photo of {args.source} could be aligned (the reasons are above)")
    return 0
