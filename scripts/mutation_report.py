"""Kill rate per module from mutmut's results (``mutants/**/*.py.meta``), for docs/testing.md.

    python scripts/mutation_report.py                  # every mutant mutmut has a result for
    python scripts/mutation_report.py 'meer.losses.*'  # only mutants whose names match
    python scripts/mutation_report.py --unchecked 'meer.losses.*'  # names of those without a result yet

``mutmut run NAMES...`` reruns every mutant it is given, so resuming an interrupted run is
``mutmut run $(python scripts/mutation_report.py --unchecked PATTERNS)``.

Mutants listed in docs/mutants-equivalent.txt (one name per line, ``#`` comments) are counted
as equivalent: left out of the denominator and reported apart. Prints one markdown table row
per module and then every mutant that is neither killed nor equivalent.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "docs" / "mutants-equivalent.txt"
KILLED = {1, 3, 37}  # a failing test, pytest's internal error, a type-check error (mutmut's codes)
TIMEOUT = {24, -24, 36, 152, 255}


def equivalent_names() -> set[str]:
    if not EQUIVALENT.is_file():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in EQUIVALENT.read_text().splitlines())
    return {line for line in lines if line}


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    return {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}.get(code, "suspicious")


def unchecked(patterns: list[str]) -> int:
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None and (not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)):
                print(name)
    return 0


def main(patterns: list[str]) -> int:
    if patterns[:1] == ["--unchecked"]:
        return unchecked(patterns[1:])
    equivalent = equivalent_names()
    counts: dict[str, Counter] = defaultdict(Counter)
    open_mutants = []
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            module = name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
            kind = "equivalent" if name in equivalent else status(code)
            counts[module][kind] += 1
            if kind not in ("killed", "equivalent", "not checked"):
                open_mutants.append((name, kind))
    if not counts:
        print("no mutmut results: run `make mutants` first", file=sys.stderr)
        return 1
    print("| module | mutants | checked | killed | timeout | equivalent | survived | other | kill rate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for module, c in sorted(counts.items()):
        total.update(c)
        print(row(module, c))
    print(row("**all**", total))
    if open_mutants:
        print("\nNot killed:")
        for name, kind in open_mutants:
            print(f"  {name}: {kind}")
    return 0


def row(module: str, c: Counter) -> str:
    """Kill rate = (killed + timeout) / (checked - equivalent): a mutant that hangs the tests is
    caught by the timeout; "other" is no tests / suspicious / skipped, counted as not killed."""
    caught = c["killed"] + c["timeout"]
    checked = sum(c.values()) - c["not checked"]
    considered = checked - c["equivalent"]
    other = considered - caught - c["survived"]
    rate = f"{100 * caught / considered:.1f}%" if considered else "-"
    return (f"| {module} | {sum(c.values())} | {checked} | {c['killed']} | {c['timeout']} | {c['equivalent']} | "
            f"{c['survived']} | {other} | {rate} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
