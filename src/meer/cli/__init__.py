"""The ``meer`` command line: each sub-command lives in its own module of this package.

A command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function ``(args) -> int``. Expected mistakes raise ``MeerError`` (or
``ValueError`` / ``FileNotFoundError``, or ``meer.io.CannotWriteError`` for an output that cannot
be written) and become a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = ["demo", "train", "eval", "export", "prepare", "cutouts", "verify", "unmask", "embed", "enroll", "identify", "gallery", "serve"]  # module names under meer.cli


class MeerError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def number(kind: type = int, low: float | None = None, high: float | None = None, above: float | None = None):
    """An argparse ``type``: a ``kind`` (int or float) at least ``low``, at most ``high`` and
    greater than ``above`` (each where given), else a one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if low is not None and high is not None else (
                f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number {bounds}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number above {above:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from meer import __version__

    parser = argparse.ArgumentParser(prog="meer", description="Masked face recognition (MEER).")
    parser.add_argument("--version", action="version", version=f"meer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"meer.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a busy machine, spinning threads of
    # two processes can slow PyTorch on CPU down ten-fold (measured: 8.7 s vs 1.1 s a step).
    # Must be set before torch is first imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from meer.io import CannotWriteError

    parser = build_parser()
    args = parser.parse_args(argv)
    # meer's own messages at INFO; other libraries' (onnxscript, ...) only when they warn
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("meer").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (MeerError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, CannotWriteError) as err:
        print(f"meer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
