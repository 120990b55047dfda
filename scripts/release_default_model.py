"""Make a checkpoint the model meer ships: ``meer/default_model`` and its test fixture.

    python scripts/release_default_model.py runs/lfw-sface/lfw-sface

Exports the checkpoint's inference network in float16 with its calibration
(``meer export --half --int8 backbone.head.fc.weight``) into ``src/meer/default_model`` and records its embeddings of a few
generated faces in ``tests/fixtures/default_model_embeddings.json``, which
``tests/integration/test_release.py`` checks. ``PROVENANCE.md`` beside the weights is
written by hand: the command, config, data, seed and benchmark row of the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import meer
from meer.cli import main as meer_main
from meer.data.synthetic import SyntheticFaces
from meer.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FACES = {"num_identities": 2, "images_per_identity": 2, "size": 112, "seed": 7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint or run folder (with calibration.json)")
    args = parser.parse_args()
    out = ROOT / "src" / "meer" / "default_model"
    # float16, and the 6.4M-weight embedding FC block-wise int8 as in SFace's own file: under 25 MB
    if meer_main(["export", args.checkpoint, "-o", str(out), "--half", "--int8", "backbone.head.fc.weight"]) != 0:
        raise SystemExit("export failed")
    if not (out / "calibration.json").is_file():
        raise SystemExit(f"{args.checkpoint} has no calibration.json: calibrate it on validation data first")
    model = meer.load(out, detector=None)
    faces = SyntheticFaces(**FACES).generate().images
    embeddings = model.embed(list(faces), aligned=True)
    fixture = ROOT / "tests" / "fixtures" / "default_model_embeddings.json"
    atomic_write_text(fixture, json.dumps({"faces": FACES, "embeddings": embeddings.round(6).tolist()}) + "\n")
    print(f"wrote {out} ({(out / 'model.safetensors').stat().st_size / 2**20:.1f} MiB) and {fixture}")


if __name__ == "__main__":
    main()
