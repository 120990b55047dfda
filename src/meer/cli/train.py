"""``meer train``: run the stages of a config (single process, or one rank under torchrun)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", action="append", required=True, metavar="FILE",
        help="YAML config or built-in name (tiny, iresnet50, ...); repeat to layer files",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override one value, e.g. --set optim.lr=0.05 (repeatable)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model from a config", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--out", help="run folder (overrides train.out_dir)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if the run folder has checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meer.config import load_config
    from meer.train.distributed import cleanup
    from meer.train.trainer import Trainer

    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides)
    try:
        trainer = Trainer(cfg, progress=not args.quiet)
        trainer.fit(resume=not args.no_resume)
        if trainer.env.is_main:
            print(f"run folder: {cfg.train.out_dir}")
    finally:
        cleanup()
    return 0
