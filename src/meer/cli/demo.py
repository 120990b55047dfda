"""``meer demo``: train MEER and the mask-augmentation baseline on synthetic faces, evaluate, report."""

from __future__ import annotations

import argparse

from meer.cli import number


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="the main job on built-in synthetic data (a few minutes on CPU)",
                            description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config override applied to both systems, e.g. --set data.synthetic_identities=100")
    parser.add_argument("--step-scale", type=number(float, above=0), default=1.0, metavar="X",
                        help="multiply every training stage's steps by X (e.g. 0.05 for a smoke run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meer.demo import DemoSettings, run_demo

    run_demo(args.out, DemoSettings(step_scale=args.step_scale, overrides=args.overrides), progress=not args.quiet)
    return 0
