"""Paired per-fold differences between two systems of a benchmark run.

    python bench/paired_folds.py runs/lfw-sface/results.json "MEER on SFace" "SFace (no training)"

Reads ``results.json`` (written by ``bench/lfw_benchmark.py``) and prints, for each setting,
the mean and population std of ``A - B`` over the test folds (accuracy points), its 95%
t-interval, and in how many folds A is ahead and behind (``meer.eval.verification.paired_difference``). Folds are the same pairs for every system, so the paired
difference is far less noisy than comparing the two means with their own spreads.
"""

from __future__ import annotations

import argparse
import json

from meer.eval.verification import paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results.json of a benchmark run")
    parser.add_argument("a", help="system A")
    parser.add_argument("b", help="system B (the reference)")
    parser.add_argument("--b-results", help="results.json holding B, when it is another run's (same split and masks)")
    args = parser.parse_args()
    systems = json.load(open(args.results))["systems"]
    if args.b_results:
        systems = json.load(open(args.b_results))["systems"] | systems
    for name in (args.a, args.b):
        if name not in systems:
            raise SystemExit(f"no system {name!r} in {args.results}; it has {sorted(systems)}")
    for setting in systems[args.a]["test"]:
        a, b = (systems[name]["test"][setting]["fold_accuracies"] for name in (args.a, args.b))
        print(f"{setting}: {paired_difference(a, b)}")

if __name__ == "__main__":
    main()
