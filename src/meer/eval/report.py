"""Reports built from evaluation results: ROC plots, image grids, markdown tables, metrics JSON.

Nothing here computes a metric; every function takes results and writes or formats them.
Files are written atomically (``meer.io``). Figures are drawn on a bare
``matplotlib.figure.Figure``, which renders with Agg and never touches pyplot's global state
or a display, so this works on a headless server and inside other people's programs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from meer.eval.verification import VerificationResult
from meer.io import atomic_write, atomic_write_json

Curve = VerificationResult | tuple[np.ndarray, np.ndarray]


def plot_roc(curves: Mapping[str, Curve], path: str | os.PathLike, title: str = "ROC") -> Path:
    """ROC curves (TAR against FAR, FAR on a log axis) of several systems in one PNG.

    Each value is a :class:`VerificationResult` (its legend entry then shows AUC and EER) or
    an ``(fpr, tpr)`` pair of float arrays ``[T]``. The FAR axis starts at the smallest
    non-zero FAR of any curve, i.e. one false accept: below it nothing is measured.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    smallest_far = 1.0
    for name, curve in curves.items():
        if isinstance(curve, VerificationResult):
            fpr, tpr = curve.fpr, curve.tpr
            label = f"{name} (AUC {curve.auc:.4f}, EER {curve.eer:.2%})"
        else:
            fpr, tpr = (np.asarray(a, dtype=np.float64) for a in curve)
            label = name
        positive = fpr > 0
        if positive.any():
            smallest_far = min(smallest_far, float(fpr[positive].min()))
        ax.plot(fpr, tpr, label=label, linewidth=1.5)
    chance = np.logspace(math.log10(smallest_far), 0, 100)
    ax.plot(chance, chance, color="0.6", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(smallest_far, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.15)
    # Below the axes: inside, the legend would hide the low-FAR end of some curve.
    fig.legend(loc="outside lower center", fontsize="small", frameon=False)
    return _save(fig, path)


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | os.PathLike,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Path:
    """A PNG grid of uint8 images: ``rows[i][j]`` is ``[H, W, 3]`` RGB or ``[H, W]`` grey.

    Typical columns: masked input / predicted occlusion / restored / clean. Rows may be
    shorter than the longest one (their last cells stay empty). Images are shown unscaled in
    value (grey maps 0..255 to black..white) and at least at their own pixel size.
    """
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one image")
    num_rows, num_cols = len(rows), max(len(row) for row in rows)
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"{len(row_labels)} row labels for {num_rows} rows")
    if col_labels is not None and len(col_labels) != num_cols:
        raise ValueError(f"{len(col_labels)} column labels for {num_cols} columns")
    for image in (image for row in rows for image in row):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"images must be uint8 [H, W, 3] or [H, W], got {image.dtype} {image.shape}")

    height, width = rows[0][0].shape[:2]
    dpi = 100
    cell = max(1.5, width / dpi)  # inches; never shrink a face below its own pixels
    fig = Figure(figsize=(cell * num_cols, cell * height / width * num_rows), dpi=dpi, layout="constrained")
    axes = fig.subplots(num_rows, num_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(num_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            # Hidden spines rather than axis("off"), which would also hide the row label.
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                image = row[j]
                if image.ndim == 2:
                    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                else:
                    ax.imshow(image, interpolation="nearest")
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize="small")
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize="small")
    return _save(fig, path)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]], missing: str = "n/a"
) -> str:
    """A GitHub-markdown table, one line per row, no trailing newline.

    ``columns`` lists ``(key, header, format)``, e.g. ``("auc", "AUC", "{:.4f}")``. A key that
    is absent, None or NaN prints as ``missing``. Columns holding only numbers are
    right-aligned; ``|`` inside a cell is escaped.
    """
    cells = [[_cell(row.get(key), fmt, missing) for key, _, fmt in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(key), (int, float, np.number)) or _is_missing(row.get(key)) for row in rows)
        and not all(_is_missing(row.get(key)) for row in rows)
        for key, _, _ in columns
    ]
    lines = [
        "| " + " | ".join(_escape(header) for _, header, _ in columns) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def write_metrics_json(path: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write metrics as strict JSON (sorted keys): numpy values become Python numbers and
    lists, non-string keys become strings, and NaN / infinity become ``null`` (plain JSON
    has no such numbers, and many readers reject them)."""
    return atomic_write_json(path, _json_ready(metrics))


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _cell(value: Any, fmt: str, missing: str) -> str:
    return missing if _is_missing(value) else _escape(fmt.format(value))


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    # The temporary file has no .png suffix, so the format is given explicitly.
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
