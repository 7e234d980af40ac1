"""Predictions in the ABAW challenge submission format, and a reader that checks them.

One text file per subject (annotation stem, e.g. ``video5_left``) and task: the task's header line,
then one line per video frame, every frame predicted. AU lines hold 12 comma-separated 0/1 values in
the order of ``AU_NAMES``; expression lines hold one class index 0..6 in the order of ``EXPR_NAMES``;
valence-arousal lines hold ``valence,arousal``, each in [-1, 1] with 3 decimals. This is the layout of
the Aff-Wild2 annotation files, without the unlabelled values (``-1``, ``-5``).

Folder layout written by :func:`write_submission` under a submission root::

    <root>/<variant>/AU_Set/<name>.txt
    <root>/<variant>/EXPR_Set/<name>.txt
    <root>/<variant>/VA_Set/<name>.txt

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_task_file(root / "v1.txt", "expr", np.array([0, 4, 4]))
    >>> path.read_text().splitlines()
    ['Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise', '0', '4', '4']
    >>> read_task_file(path, "expr").tolist()
    [0, 4, 4]
    >>> va = write_task_file(root / "v2.txt", "va", np.array([[0.25, -1.0], [0.12345, 0.9999]]))
    >>> va.read_text().splitlines()
    ['valence,arousal', '0.250,-1.000', '0.123,1.000']
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.fsio import atomic_path
from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS, NUM_EXPRS, NUM_VA, VA_NAMES, VA_RANGE

TASK_FOLDERS: dict[str, str] = {"au": "AU_Set", "expr": "EXPR_Set", "va": "VA_Set"}
HEADERS: dict[str, str] = {"au": ",".join(AU_NAMES), "expr": ",".join(EXPR_NAMES), "va": ",".join(VA_NAMES)}
VA_DECIMALS = 3


class SubmissionError(ValueError):
    """A submission file or prediction array does not follow the ABAW format."""


def format_task(task: str, predictions: np.ndarray) -> str:
    """Return the text of one submission file for ``task`` (``"au"`` (N,12) 0/1, ``"expr"`` (N,) or
    ``"va"`` (N,2) in [-1, 1])."""
    pred = _check_predictions(task, predictions, where="predictions")
    if task == "au":
        lines = [",".join(str(int(v)) for v in row) for row in pred]
    elif task == "va":
        # + 0.0 turns a rounded -0.0 into 0.0, so no line reads "-0.000"
        rounded = np.round(pred.astype(np.float64), VA_DECIMALS) + 0.0
        lines = [",".join(f"{v:.{VA_DECIMALS}f}" for v in row) for row in rounded]
    else:
        lines = [str(int(v)) for v in pred]
    return "\n".join([HEADERS[task], *lines]) + "\n"


def write_task_file(path: str | Path, task: str, predictions: np.ndarray) -> Path:
    """Write one submission file atomically and return its path."""
    path = Path(path)
    text = format_task(task, predictions)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_task_file(path: str | Path, task: str) -> np.ndarray:
    """Read one submission file: (N, 12) int8 for ``"au"``, (N,) int8 for ``"expr"``, (N, 2) float32 for
    ``"va"``; errors name the line."""
    path = Path(path)
    _check_task(task)
    if not path.is_file():
        raise FileNotFoundError(f"submission file not found: {path}")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != HEADERS[task]:
        found = lines[0] if lines else "<empty file>"
        raise SubmissionError(f"{path}:1: header must be {HEADERS[task]!r}, found {found!r}")
    if task == "va":
        return _read_va_lines(path, lines[1:])
    width = NUM_AUS if task == "au" else 1
    allowed = (0, 1) if task == "au" else tuple(range(NUM_EXPRS))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.strip().split(",")
        try:
            values = [int(f) for f in fields]
        except ValueError as exc:
            raise SubmissionError(f"{path}:{number}: not integers: {line!r}") from exc
        if len(values) != width or any(v not in allowed for v in values):
            raise SubmissionError(
                f"{path}:{number}: expected {width} value(s) in {list(allowed)}, found {line!r}"
            )
        rows.append(values)
    if not rows:
        raise SubmissionError(f"{path}: no prediction lines after the header")
    array = np.asarray(rows, dtype=np.int8)
    return array if task == "au" else array[:, 0]


def _read_va_lines(path: Path, lines: list[str]) -> np.ndarray:
    """The (N, 2) float32 values of a VA file's lines after the header; errors name the line."""
    rows = []
    low, high = VA_RANGE
    for number, line in enumerate(lines, start=2):
        fields = line.strip().split(",")
        try:
            values = [float(f) for f in fields]
        except ValueError as exc:
            raise SubmissionError(f"{path}:{number}: not numbers: {line!r}") from exc
        if len(values) != NUM_VA or not all(low <= v <= high for v in values):   # NaN fails the range
            raise SubmissionError(f"{path}:{number}: expected {NUM_VA} values in [{low:g}, {high:g}], found {line!r}")
        rows.append(values)
    if not rows:
        raise SubmissionError(f"{path}: no prediction lines after the header")
    return np.asarray(rows, dtype=np.float32)


def write_submission(
    root: str | Path, variant: str, task: str, predictions: Mapping[str, np.ndarray]
) -> list[Path]:
    """Write ``{subject: predictions}`` of one variant and task under ``root/<variant>/<TASK_Set>/``."""
    _check_task(task)
    folder = Path(root) / variant / TASK_FOLDERS[task]
    return [write_task_file(folder / f"{name}.txt", task, pred) for name, pred in sorted(predictions.items())]


def read_submission(root: str | Path, variant: str, task: str) -> dict[str, np.ndarray]:
    """Read every file of one variant and task written by :func:`write_submission`."""
    _check_task(task)
    folder = Path(root) / variant / TASK_FOLDERS[task]
    if not folder.is_dir():
        raise FileNotFoundError(f"submission folder not found: {folder}")
    return {path.stem: read_task_file(path, task) for path in sorted(folder.glob("*.txt"))}


def _check_task(task: str) -> None:
    if task not in TASK_FOLDERS:
        raise ValueError(f"task must be one of {sorted(TASK_FOLDERS)}, got {task!r}")


def _check_predictions(task: str, predictions: np.ndarray, where: str) -> np.ndarray:
    _check_task(task)
    pred = np.asarray(predictions)
    if task == "au":
        if pred.ndim != 2 or pred.shape[1] != NUM_AUS:
            raise SubmissionError(f"{where}: AU predictions must be (N, {NUM_AUS}), got {pred.shape}")
        if not np.isin(pred, (0, 1)).all():
            raise SubmissionError(f"{where}: AU predictions must be 0 or 1")
    elif task == "va":
        if pred.ndim != 2 or pred.shape[1] != NUM_VA:
            raise SubmissionError(f"{where}: VA predictions must be (N, {NUM_VA}), got {pred.shape}")
        low, high = VA_RANGE
        if not ((pred >= low) & (pred <= high)).all():   # NaN fails too
            raise SubmissionError(f"{where}: VA predictions must be numbers in [{low:g}, {high:g}]")
    else:
        if pred.ndim != 1:
            raise SubmissionError(f"{where}: expression predictions must be (N,), got {pred.shape}")
        if ((pred < 0) | (pred >= NUM_EXPRS)).any():
            raise SubmissionError(f"{where}: expression predictions must be in [0, {NUM_EXPRS})")
    if len(pred) == 0:
        raise SubmissionError(f"{where}: no frames to write")
    return pred
