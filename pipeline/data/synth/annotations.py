"""Annotation files of the two layouts: Aff-Wild2 AU/EXPR/VA text files and BP4D AU occurrence CSVs.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> write_expr_file(root / "v.txt", np.array([0, 4, -1], dtype=np.int8))
    >>> (root / "v.txt").read_text().splitlines()
    ['Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise', '0', '4', '-1']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS, NUM_VA, UNLABELLED, VA_FILE_UNLABELLED, VA_NAMES

# BP4D-Spontaneous AU_OCC columns (FACS numbers); AU25/AU26 are not coded in BP4D.
BP4D_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
BP4D_NOT_CODED = 9


def write_au_file(path: Path, labels: np.ndarray) -> None:
    """Write an AU_Set file: header, then one row of 12 values in {0, 1, -1} per frame."""
    if labels.ndim != 2 or labels.shape[1] != NUM_AUS:
        raise ValueError(f"{path}: AU labels must have shape (N, {NUM_AUS}), got {labels.shape}")
    lines = [",".join(AU_NAMES)] + [",".join(str(int(v)) for v in row) for row in labels]
    _write_lines(path, lines)


def write_expr_file(path: Path, labels: np.ndarray) -> None:
    """Write an EXPR_Set file: header, then one value in {-1, 0..6} per frame."""
    lines = [",".join(EXPR_NAMES)] + [str(int(v)) for v in labels]
    _write_lines(path, lines)


def write_va_file(path: Path, labels: np.ndarray) -> None:
    """Write a VA_Set file: header ``valence,arousal``, then one row per frame, 3 decimals, NaN rows as -5."""
    if labels.ndim != 2 or labels.shape[1] != NUM_VA:
        raise ValueError(f"{path}: VA labels must have shape (N, {NUM_VA}), got {labels.shape}")
    unlabelled = f"{VA_FILE_UNLABELLED:g}"
    rows = [
        ",".join(unlabelled if np.isnan(v) else f"{round(float(v), 3) + 0.0:.3f}" for v in row)  # + 0.0: no "-0.000"
        for row in labels
    ]
    _write_lines(path, [",".join(VA_NAMES)] + rows)


def write_bp4d_csv(path: Path, first_frame: int, labels: np.ndarray) -> None:
    """Write a BP4D AU_OCC CSV from (N, 12) ABAW-order labels; -1 becomes 9 (not coded).

    AU14 and AU17 (BP4D columns that are not ABAW AUs, and not drawn) are written as 0.
    """
    index = {int(name[2:]): k for k, name in enumerate(AU_NAMES)}
    rows = ["0," + ",".join(str(au) for au in BP4D_AUS)]
    for i, row in enumerate(labels):
        values = []
        for au in BP4D_AUS:
            v = int(row[index[au]]) if au in index else 0
            values.append(BP4D_NOT_CODED if v == UNLABELLED or row[0] == UNLABELLED else v)
        rows.append(f"{first_frame + i}," + ",".join(str(v) for v in values))
    _write_lines(path, rows)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
