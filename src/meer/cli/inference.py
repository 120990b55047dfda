"""Options and helpers shared by the commands that use a trained model (verify, unmask, embed,
enroll, identify, serve). Not a command itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

ENV_CHECKPOINT = "MEER_CHECKPOINT"
DETECTORS = ("mtcnn", "mediapipe", "yunet")  # meer.data.detect.BACKENDS, without importing OpenCV
DETECTOR_HELP = ("face detector: auto (the installed ones of mtcnn, mediapipe, yunet, tried in that order), mtcnn, mediapipe, yunet, "
                 "or a comma-separated list tried in turn until one finds a face (e.g. mtcnn,yunet)")


def detector_spec(text: str) -> str:
    """argparse type of ``--detector``: ``auto``, a backend, or backends separated by commas."""
    parts = [part.strip() for part in text.split(",")]
    if text == "auto" or all(part in DETECTORS for part in parts):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: choose auto, {', '.join(DETECTORS)} or a comma-separated list of them")


def add_model_arguments(parser: argparse.ArgumentParser, aligned: bool = True, as_json: bool = True) -> None:
    """``--checkpoint/-m``, ``--device``, ``--detector`` and (optionally) ``--aligned``, ``--json``."""
    parser.add_argument(
        "--checkpoint", "-m", default=os.environ.get(ENV_CHECKPOINT), metavar="PATH",
        help=f"checkpoint, run or release folder (default: ${ENV_CHECKPOINT}, else the model meer ships)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--detector", default="auto", type=detector_spec, help=DETECTOR_HELP + " (default: auto)"
    )
    if aligned:
        parser.add_argument(
            "--aligned", action="store_true",
            help="inputs are crops already aligned to the ArcFace template: skip detection",
        )
    if as_json:
        parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


def load_from_args(args: argparse.Namespace):
    """The :class:`meer.api.FaceModel` the arguments name."""
    from meer.api import default_model, load
    from meer.cli import MeerError

    if not args.checkpoint and not default_model().is_dir():
        raise MeerError(f"no model given and this install has no default model: pass --checkpoint/-m PATH "
                        f"(or set {ENV_CHECKPOINT})")
    return load(args.checkpoint or None, device=args.device, detector=args.detector)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def calibration_note(model) -> str:
    return "calibrated" if model.calibrated else "not calibrated: fallback threshold"
