"""Report writers: valid PNGs, an exact markdown table, strict metrics JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meer.eval.report import image_grid, markdown_table, plot_roc, write_metrics_json
from meer.eval.verification import verify_pairs


def assert_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_plot_roc_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    emb1 = rng.standard_normal((400, 8))
    emb2 = emb1 + rng.standard_normal((400, 8)) * np.where(np.arange(400) % 2 == 0, 0.5, 3.0)[:, None]
    result = verify_pairs(emb1, emb2, np.arange(400) % 2 == 0, folds=4)
    path = plot_roc({"system": result, "tuple": (result.fpr, result.tpr ** 2)}, tmp_path / "roc.png", "ROC")
    width, height = assert_png(path)
    assert width > 300 and height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]  # no temporary file left behind


def test_image_grid_writes_a_png_with_colour_and_grey_cells(tmp_path):
    colour = np.zeros((24, 24, 3), np.uint8)
    grey = np.full((24, 24), 255, np.uint8)
    path = image_grid(
        [[colour, grey, colour], [colour, grey]], tmp_path / "grid.png",
        row_labels=["a", "b"], col_labels=["masked", "occlusion", "restored"],
    )
    assert_png(path)
    with pytest.raises(ValueError, match="uint8"):
        image_grid([[colour.astype(np.float32)]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="column labels"):
        image_grid([[colour]], tmp_path / "bad.png", col_labels=["x", "y"])


def test_markdown_table():
    rows = [
        {"system": "MEER", "acc": 99.1234, "psnr": 24.5},
        {"system": "a|b", "acc": 97.0, "psnr": None},
        {"system": "c", "acc": float("nan")},
    ]
    columns = [("system", "System", "{}"), ("acc", "Acc %", "{:.2f}"), ("psnr", "PSNR", "{:.1f}")]
    assert markdown_table(rows, columns) == (
        "| System | Acc % | PSNR |\n"
        "|---|---:|---:|\n"
        "| MEER | 99.12 | 24.5 |\n"
        "| a\\|b | 97.00 | n/a |\n"
        "| c | n/a | n/a |"
    )


def test_write_metrics_json_is_strict(tmp_path):
    metrics = {
        "tar": {1e-2: np.float32(0.5), 1e-4: float("nan")},
        "folds": np.array([0.9, 0.8]),
        "count": np.int64(3),
        "psnr": float("inf"),
    }
    path = write_metrics_json(tmp_path / "metrics.json", metrics)
    loaded = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-strict {name}"))
    assert loaded == {"tar": {"0.01": 0.5, "0.0001": None}, "folds": [0.9, 0.8], "count": 3, "psnr": None}
