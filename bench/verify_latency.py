"""How long ``FaceModel.verify`` takes with the shipped model, and what the one network pass for
embedding and mask verdict saves (``embed_with_verdicts``; before it, ``embed`` and
``mask_verdicts`` each ran the network).

    python bench/verify_latency.py --lfw ../shared/data/lfw [--repeat 15] [--threads 1]

Times, as the median of ``--repeat`` calls after one unmeasured call: ``verify`` of two aligned
faces and of two photos (detection included), each with the mirrored pass on and off; and, on the
same aligned faces, the two-pass way (``embed`` then ``mask_verdicts``) against the one pass.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import meer

PHOTOS = ("Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg")


def median_ms(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def timings(flip: bool, photos: list[Path], repeat: int) -> dict[str, float]:
    model = meer.load(flip=flip)
    faces = [model.face(p) for p in photos]
    calls = {
        "verify, two photos (detection included)": lambda: model.verify(*photos),
        "verify, two aligned faces": lambda: model.verify(*faces),
        "embed + mask_verdicts, two aligned faces (two passes)": lambda: (model.embed(faces), model.mask_verdicts(faces)),
        "embed_with_verdicts, two aligned faces (one pass)": lambda: model.embed_with_verdicts(faces),
    }
    return {name: median_ms(call, repeat) for name, call in calls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", required=True, help="the LFW folder (../shared/data/lfw)")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = [Path(args.lfw) / name for name in PHOTOS]
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such photo: {missing[0]}")

    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeat} calls; shipped model\n")
    print("| call | mirrored pass | ms |")
    print("| --- | --- | ---: |")
    for flip in (False, True):
        for name, ms in timings(flip, photos, args.repeat).items():
            print(f"| {name} | {'on' if flip else 'off'} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
