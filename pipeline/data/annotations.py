"""Readers of the Aff-Wild2 annotation text files (AU_Set, EXPR_Set and VA_Set).

An AU file is the header ``AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26`` followed by one
line per video frame of 12 comma-separated values in {0, 1, -1}; an EXPR file is the header
``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise`` followed by one value in {-1, 0..6} per
line; a VA file is the header ``valence,arousal`` followed by two numbers per line, each in [-1, 1]
or ``-5`` (unlabelled). Line i after the header is frame i. Trailing spaces, CRLF line ends, a UTF-8
byte-order mark and blank lines at the very end are tolerated; anything else is an
:class:`AnnotationError` naming the file and the 1-based number of every bad line.

An AU row that holds any ``-1`` is unlabelled for the AU task as a whole, so the reader turns the
entire row into ``-1``; likewise a VA row holding a ``-5`` becomes NaN in both columns.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.txt"
    >>> _ = p.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise\\n4\\n-1\\n0\\n")
    >>> read_expr_file(p).tolist()
    [4, -1, 0]
    >>> _ = p.write_text("valence,arousal\\n0.25,-0.5\\n-5,-5\\n")
    >>> read_va_file(p).tolist()
    [[0.25, -0.5], [nan, nan]]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from pipeline.data.faults import join_faults
from pipeline.labels import (
    AU_NAMES, EXPR_NAMES, NUM_AUS, NUM_EXPRS, NUM_VA, UNLABELLED, VA_FILE_UNLABELLED, VA_NAMES, VA_RANGE,
)

AU_HEADER: str = ",".join(AU_NAMES)
EXPR_HEADER: str = ",".join(EXPR_NAMES)
VA_HEADER: str = ",".join(VA_NAMES)
_VA_WHAT = f"valence and arousal must be numbers in [{VA_RANGE[0]:g}, {VA_RANGE[1]:g}] or {VA_FILE_UNLABELLED:g}"

V = TypeVar("V", int, float)

_AU_VALUES: dict[str, int] = {"0": 0, "1": 1, "-1": -1}
_EXPR_VALUES: dict[str, int] = {str(v): v for v in range(-1, NUM_EXPRS)}


class AnnotationError(ValueError):
    """An annotation file does not follow the Aff-Wild2 format; the message names file and line."""


def read_au_file(path: str | Path) -> np.ndarray:
    """Read an AU_Set file into an (N, 12) int8 array; rows with any -1 become all -1."""
    path = Path(path)
    rows = _read_rows(path, AU_HEADER, NUM_AUS, _AU_VALUES.get, "AU values must be 0, 1 or -1")
    labels = np.asarray(rows, dtype=np.int8).reshape(-1, NUM_AUS)
    labels[(labels == UNLABELLED).any(axis=1)] = UNLABELLED
    return labels


def read_expr_file(path: str | Path) -> np.ndarray:
    """Read an EXPR_Set file into an (N,) int8 array of class indices, -1 = unlabelled."""
    path = Path(path)
    rows = _read_rows(path, EXPR_HEADER, 1, _EXPR_VALUES.get, f"expression must be -1 or 0..{NUM_EXPRS - 1}")
    return np.asarray(rows, dtype=np.int8).reshape(-1)


def read_va_file(path: str | Path) -> np.ndarray:
    """Read a VA_Set file into an (N, 2) float32 array of (valence, arousal); rows with a -5 become NaN."""
    path = Path(path)
    rows = _read_rows(path, VA_HEADER, NUM_VA, _va_value, _VA_WHAT)
    labels = np.asarray(rows, dtype=np.float32).reshape(-1, NUM_VA)
    labels[(labels == VA_FILE_UNLABELLED).any(axis=1)] = np.nan
    return labels


def read_annotation(path: str | Path, task: str) -> np.ndarray:
    """Read the annotation file of ``task`` (``"au"``, ``"expr"`` or ``"va"``)."""
    if task == "au":
        return read_au_file(path)
    if task == "expr":
        return read_expr_file(path)
    if task == "va":
        return read_va_file(path)
    raise ValueError(f"task must be 'au', 'expr' or 'va', got {task!r}")


def _va_value(token: str) -> float | None:
    """A valence or arousal value: a finite number in [-1, 1], or exactly -5 (unlabelled); else ``None``."""
    try:
        value = float(token)
    except ValueError:
        return None
    # float() also takes "nan" and "inf", which no annotation tool writes
    if not math.isfinite(value):
        return None
    if value == VA_FILE_UNLABELLED or VA_RANGE[0] <= value <= VA_RANGE[1]:
        return value
    return None


def _read_rows(path: Path, header: str, n_cols: int, parse: Callable[[str], V | None], what: str) -> list[V]:
    """Parse ``path`` into a flat list of values, checking header, column count and values per line.

    ``parse`` turns one stripped token into its value, or ``None`` when the token is not allowed.

    Every bad line is found before failing, so one :class:`AnnotationError` lists them all (the first
    :data:`~pipeline.data.faults.MAX_LISTED` in full).
    """
    lines = read_text_lines(path)
    if not lines:
        raise AnnotationError(f"{path}: empty annotation file (expected the header {header!r})")
    faults: list[str] = []
    found = ",".join(col.strip() for col in lines[0].split(","))
    if found != header:
        faults.append(f"line 1: wrong header {lines[0]!r}, expected {header!r}")
    if len(lines) == 1:
        faults.append("annotation file has a header but no frame lines")
    flat: list[V] = []
    for number, line in enumerate(lines[1:], start=2):
        fault = _parse_line(line, n_cols, parse, what, flat)
        if fault:
            faults.append(f"line {number}: {fault}")
    if faults:
        raise AnnotationError(f"{path}: {join_faults(faults, 'bad lines')}")
    return flat


def _parse_line(line: str, n_cols: int, parse: Callable[[str], V | None], what: str, out: list[V]) -> str | None:
    """Append the values of one frame line to ``out``; return what is wrong with it, or ``None``."""
    tokens = line.split(",")
    if len(tokens) != n_cols:
        return f"expected {n_cols} comma-separated value(s), found {len(tokens)} in {line!r}"
    row: list[V] = []
    for token in tokens:
        value = parse(token.strip())
        if value is None:
            return f"{what}, found {token.strip()!r} in {line!r}"
        row.append(value)
    out.extend(row)
    return None


def read_text_lines(path: Path, what: str = "annotation file") -> list[str]:
    """Return a UTF-8 file's lines without line ends or trailing spaces, minus blank lines at the end."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({exc})") from exc
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
