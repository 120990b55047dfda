"""``meer eval``: verification (U-U / M-U / M-M), masked identification and synthesis quality.

Examples:
  meer eval runs/tiny --synthetic
  meer eval runs/lfw-meer --lfw-cache /data/lfw112 --pairs lfw/pairs.txt --folds 6-10 \\
            --masked-cache /data/rmfrd112 --masked-root rmfrd-dev -o runs/lfw-meer/eval
  meer eval runs/lfw-meer --lfw-cache /data/lfw112 --pairs val_pairs.txt --calibrate all

The report gives the k-fold accuracy of each setting and, when the checkpoint has a calibration,
the accuracy at its stored thresholds (one per setting, or its single threshold for all), which
is what ``meer verify`` decides with.
"""

from __future__ import annotations

import argparse


def parse_folds(text: str | None) -> list[int] | None:
    """``"6-10"`` or ``"1,3,5"`` (1-based, as LFW numbers them) -> 0-based fold indices."""
    if not text:
        return None
    folds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            folds.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"--folds must look like 6-10 or 1,2,3, got {text!r}") from None
    if min(folds) < 1:
        raise ValueError("--folds are numbered from 1")
    return [f - 1 for f in folds]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="evaluate a checkpoint on verification / identification protocols",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint folder or run folder")
    parser.add_argument("-o", "--out", help="report folder (default: <checkpoint>/eval)")
    parser.add_argument("--synthetic", action="store_true", help="held-out synthetic identities (as the demo)")
    parser.add_argument("--lfw-cache", help="aligned cache of the pairs' images (meer prepare)")
    parser.add_argument("--pairs", help="pairs file in LFW pairs.txt format")
    parser.add_argument("--folds", help="only these folds, 1-based, e.g. 6-10")
    parser.add_argument("--bin-cache", metavar="DIR",
                        help="a prepared InsightFace verification .bin (meer prepare lfw.bin -o DIR): its pairs "
                             "in 10 contiguous folds, as InsightFace evaluates them")
    parser.add_argument("--masked-cache", help="aligned cache of a <person>/masked_* + unmasked_* folder")
    parser.add_argument("--masked-root", help="that folder itself (to list probes and gallery)")
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--mask-seed", type=int, default=12345, help="seed of the rendered test masks")
    parser.add_argument("--calibrate", metavar="SETTING", choices=["U-U", "M-U", "M-M", "all"],
                        help="store the best-accuracy threshold of this setting in the checkpoint, or with "
                             "'all' one per setting (U-U, M-U, M-M), chosen by each photo's mask verdict "
                             "(use validation data, never test data)")
    parser.add_argument("--calibrate-identification", metavar="FAR", type=float,
                        help="also store the open-set identification threshold for this false-accept rate "
                             "(e.g. 0.01): masked probes of half the identities against the unmasked first "
                             "photo of each, the other half unknown; needs a verification calibration")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print metrics.json to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meer.calibration import read_calibration
    from meer.cli import MeerError
    from meer.eval.suite import (
        VerificationSet,
        run_verification,
        stored_threshold_accuracy,
        write_report,
    )
    from meer.inference.checkpoint import find_checkpoint, load_model

    if bool(args.lfw_cache) != bool(args.pairs):
        raise MeerError("--lfw-cache and --pairs go together")
    if bool(args.masked_cache) != bool(args.masked_root):
        raise MeerError("--masked-cache and --masked-root go together")
    if not (args.synthetic or args.lfw_cache or args.bin_cache or args.masked_cache):
        raise MeerError("name at least one protocol: --synthetic, --lfw-cache/--pairs, --bin-cache or "
                        "--masked-cache/--masked-root")
    if args.folds and not args.lfw_cache:
        raise MeerError("--folds selects LFW pairs: it needs --lfw-cache/--pairs")
    if args.calibrate_identification is not None:
        if not 0 < args.calibrate_identification < 1:
            raise MeerError(f"--calibrate-identification takes a false-accept rate between 0 and 1, "
                            f"got {args.calibrate_identification:g}")
        if not (args.synthetic or args.lfw_cache or args.bin_cache):
            raise MeerError("--calibrate-identification needs a verification protocol (--synthetic, --lfw-cache "
                            "or --bin-cache)")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise MeerError(f"-o {args.out}: a file stands there; the report is a folder")
    checkpoint = find_checkpoint(args.checkpoint)
    model, cfg, _ = load_model(checkpoint, args.device)
    progress = not args.quiet
    protocols: list[VerificationSet] = []
    if args.synthetic:
        from meer.data.synthetic import SyntheticFaces
        from meer.demo import TEST_SEED_OFFSET, DemoSettings
        from meer.eval.pairs import make_pairs

        demo = DemoSettings()
        faces = SyntheticFaces(demo.test_identities, demo.test_images_per_identity, cfg.model.input_size,
                               cfg.data.synthetic_seed + TEST_SEED_OFFSET).generate()
        protocols.append(VerificationSet("synthetic", faces, make_pairs(faces.labels, demo.folds, demo.pairs_per_fold,
                                                                        seed=args.mask_seed)))
    if args.lfw_cache:
        from meer.data.protocols import read_lfw_pairs
        from meer.eval.real import resolve_pairs

        faces, pairs = resolve_pairs(open_cache(args.lfw_cache, cfg), read_lfw_pairs(args.pairs), parse_folds(args.folds))
        protocols.append(VerificationSet("pairs", faces, pairs))
    if args.bin_cache:
        from meer.eval.real import verification_bin_pairs

        faces, pairs = verification_bin_pairs(open_cache(args.bin_cache, cfg))
        protocols.append(VerificationSet(Path(args.bin_cache).name, faces, pairs))
    results = {}
    for protocol in protocols:
        results[protocol.name] = run_verification(model, protocol, args.mask_seed, tuple(cfg.data.mask_types),
                                                  args.flip, progress)
    identification = None
    if args.masked_cache:
        from meer.data.protocols import masked_folder_protocol
        from meer.eval.real import masked_identification

        identification = {"masked": masked_identification(model, open_cache(args.masked_cache, cfg),
                                                          masked_folder_protocol(args.masked_root), args.flip,
                                                          progress=progress)}
    if args.calibrate:
        protocol = protocols[0] if protocols else None
        if protocol is None:
            raise MeerError("--calibrate needs a verification protocol")
        calibrate(checkpoint, protocol, results[protocol.name], args.calibrate)
    out = Path(args.out) if args.out else checkpoint / "eval"
    extra = {"flip": args.flip, "mask_seed": args.mask_seed, "folds": args.folds}
    calibration = read_calibration(checkpoint)
    stored = ({p.name: stored_threshold_accuracy(results[p.name].embeddings, p, calibration) for p in protocols}
              if calibration is not None else None)
    # the report's title: the model evaluated (<run>/step_N, or a release's folder), not where it trained
    title = f"{checkpoint.parent.parent.name}/{checkpoint.name}" if checkpoint.parent.name == "checkpoints" else checkpoint.name
    write_report(out, title, str(checkpoint), results, identification, extra, stored)
    if args.calibrate_identification is not None:
        calibrate_open_set(checkpoint, protocols[0], results[protocols[0].name], args.calibrate_identification)
    if args.json:
        print((out / "metrics.json").read_text())
    else:
        print((out / "summary.md").read_text())
        print(f"report: {out}")
    return 0


def calibrate(checkpoint, protocol, result, setting: str) -> None:
    """Store the best-accuracy threshold of ``setting`` on ``protocol``, or one per setting
    with ``"all"``; the new calibration replaces the file."""
    from meer.calibration import Calibration, write_calibration
    from meer.eval.suite import pooled_threshold, pooled_thresholds

    if setting == "all":
        chosen = pooled_thresholds(result, protocol)
        calibration = Calibration.from_settings(chosen, f"{protocol.name} per setting")
        for name, (threshold, accuracy) in chosen.items():
            print(f"calibrated {name} threshold {threshold:.4f} (accuracy {accuracy:.4f} on {protocol.name} {name})")
    else:
        threshold, accuracy = pooled_threshold(result, protocol, setting)
        calibration = Calibration(threshold, f"{protocol.name} {setting}", accuracy, setting)
        print(f"calibrated threshold {threshold:.4f} (accuracy {accuracy:.4f} on {protocol.name} {setting})")
    write_calibration(checkpoint, calibration)


def calibrate_open_set(checkpoint, protocol, result, target_far: float) -> None:
    from meer.calibration import (
        calibrate_identification,
        open_set_split,
        write_identification_calibration,
    )

    labels = protocol.faces.labels
    gallery, known, unknown = open_set_split(labels)
    embeddings = result.embeddings
    outcome = calibrate_identification(embeddings.clean[gallery], labels[gallery], embeddings.masked[known],
                                       labels[known], embeddings.masked[unknown], target_far)
    name = f"{protocol.name}: masked probes vs unmasked gallery, {len(gallery)} enrolled"
    write_identification_calibration(checkpoint, outcome, name)
    print(f"identification threshold {outcome.threshold:.4f}: FAR {outcome.far:.4f} on {outcome.num_unknown} unknown "
          f"probes, DIR {outcome.dir:.4f} on {outcome.num_known} known probes ({name})")


def open_cache(path: str, cfg):
    """A prepared cache, refused when its alignment is not the one the model was trained on."""
    from meer.cli import MeerError
    from meer.data.cache import FaceCache

    cache = FaceCache.open(path)
    if cache.template != cfg.model.alignment:
        raise MeerError(f"{path} is aligned to the {cache.template} template; this model reads "
                        f"{cfg.model.alignment}-aligned faces (meer prepare --template {cfg.model.alignment})")
    return cache
