"""Which detector chain aligns real masked photos best, judged by recognition (issue 14, item 4)?

    cd bench && python detector_recognition.py \
        "mtcnn=../data/rmfrd-train112" "mtcnn,yunet=../data/rmfrd-train112-mty"

Each argument is NAME=CACHE: the same photo folder (training data, e.g. rmfrd-train) prepared by
``meer prepare --no-face frame`` with another ``--detector``. Every person's masked photos are
probes against all unmasked photos; raw SFace (or ``-m`` models) embeds them. Printed per cache:
faces found by a detector / left to the guessed frame, and rank-1, rank-5 and TAR at FAR 1e-2 of
the masked probes. BENCHMARKS.md section 6 measured recall and landmark error; this measures what
the alignment does to recognition.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see meer.cli.main

import argparse

from real_mask_training import identification_scores, masked_gallery
from unmask_quality import raw_sface

from meer.data.cache import FaceCache
from meer.eval.report import markdown_table
from meer.inference.checkpoint import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("caches", nargs="+", metavar="NAME=CACHE", help="meer prepare outputs of one folder")
    parser.add_argument("-m", "--model", action="append", default=[], help="also this model (NAME=PATH)")
    args = parser.parse_args()
    caches = [spec.partition("=")[::2] for spec in args.caches]
    if any(not path for _, path in caches):
        parser.error("each cache is NAME=PATH")
    models = [("raw SFace", raw_sface())]
    models += [(label or path, load_model(path)[0]) for label, _, path in (m.rpartition("=") for m in args.model)]
    rows = []
    for name, path in caches:
        cache = FaceCache.open(path)
        fallback = cache.fallback
        masked = cache.faces.real_masked
        for model_name, model in models:
            scores = identification_scores(*masked_gallery(model, cache.faces))
            rows.append({"cache": name, "model": model_name, **scores,
                         "masked_frame": int((fallback & masked).sum()), "masked": int(masked.sum()),
                         "bare_frame": int((fallback & ~masked).sum()), "bare": int((~masked).sum())})
    print(markdown_table(rows, [
        ("cache", "detectors", "{}"), ("model", "model", "{}"),
        ("masked_frame", "masked photos left to the frame", "{}"), ("masked", "of", "{}"),
        ("bare_frame", "unmasked left to the frame", "{}"), ("bare", "of", "{}"),
        ("rank1", "masked rank-1 %", "{:.1f}"), ("rank5", "rank-5 %", "{:.1f}"),
        ("tar_far_1e-2", "TAR@FAR=1e-2 %", "{:.1f}"),
    ]))


if __name__ == "__main__":
    main()
