"""BP4D-Spontaneous AU occurrence files as extra AU training data (paper section 4.1).

Layout under ``bp4d_root``::

    AU_OCC/<Subject>_<Task>.csv               e.g. F001_T1.csv
    cropped_aligned/<Subject>_<Task>/{frame:05d}.jpg

A CSV's first row is ``0`` (the frame-number column) followed by FACS AU numbers, e.g.
``0,1,2,4,6,7,10,12,14,15,17,23,24``; each next row is a frame number then 0/1 per AU, 9 meaning
not coded. Rows are mapped onto the 12 ABAW AUs: AUs the file lacks and 9s become -1; AUs ABAW does
not use (14, 17, ...) are dropped.

Example (a three-frame file without AU26, whose AU25 is not coded (9) in frame 1; AU14 is dropped):
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = Path(tmp.name) / "F001_T1.csv"
    >>> rows = ["0,1,2,4,6,7,10,12,14,15,17,23,24,25", "1,1,0,0,0,0,0,1,1,0,0,0,0,9",
    ...         "2,1,0,0,0,0,0,1,1,0,0,0,0,0", "3,0,0,0,0,0,0,0,0,0,0,0,0,1"]
    >>> _ = csv.write_text("\\n".join(rows))
    >>> seq = read_au_occ(csv)
    >>> seq.frames.tolist(), seq.au.shape
    ([1, 2, 3], (3, 12))
    >>> seq.au[0].tolist()          # AU1 ... AU26 in ABAW order
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, -1, -1]
    >>> tmp.cleanup()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.annotations import AnnotationError, read_text_lines
from pipeline.data.faults import join_faults
from pipeline.labels import AU_NAMES, NUM_AUS, UNLABELLED

AU_OCC_DIR = "AU_OCC"
CROPS_DIR = "cropped_aligned"
NOT_CODED = 9
SUBJECT_PREFIX = "bp4d_"  # manifest names of BP4D sequences, so they never collide with Aff-Wild2 names

_ABAW_AU_NUMBERS: tuple[int, ...] = tuple(int(name[2:]) for name in AU_NAMES)
_VALUES: dict[str, int] = {"0": 0, "1": 1, str(NOT_CODED): UNLABELLED}


@dataclass(frozen=True)
class AUOccurrence:
    """One BP4D sequence's AU labels on the ABAW AUs."""

    stem: str            # "<Subject>_<Task>", e.g. "F001_T1"
    path: Path
    frames: np.ndarray   # (N,) int64 frame numbers, strictly increasing
    au: np.ndarray       # (N, 12) int8, -1 where not coded or not in the file


def find_au_occ(bp4d_root: str | Path) -> list[Path]:
    """Return the AU occurrence CSVs under ``bp4d_root/AU_OCC``, sorted."""
    folder = Path(bp4d_root) / AU_OCC_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{bp4d_root}: no {AU_OCC_DIR}/ folder (is this a BP4D root?)")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no AU occurrence .csv files")
    return paths


def read_au_occ(path: str | Path) -> AUOccurrence:
    """Read one AU occurrence CSV and map it onto the 12 ABAW AUs.

    Every bad row is found before failing, so one :class:`AnnotationError` lists them all (the first
    :data:`~pipeline.data.faults.MAX_LISTED` in full, the rest counted).
    """
    path = Path(path)
    lines = read_text_lines(path, "BP4D AU file")
    if not lines:
        raise AnnotationError(f"{path}: empty AU occurrence file")
    columns = _parse_header(path, lines[0])
    if len(lines) == 1:
        raise AnnotationError(f"{path}: AU occurrence file has a header but no frame rows")
    # column in the CSV (after the frame column) of each ABAW AU, or -1 when the file lacks it
    source = [columns.index(n) if n in columns else -1 for n in _ABAW_AU_NUMBERS]
    frames = np.empty(len(lines) - 1, dtype=np.int64)
    au = np.full((len(lines) - 1, NUM_AUS), UNLABELLED, dtype=np.int8)
    faults: list[str] = []
    previous: int | None = None  # the last frame number read, which the next must exceed
    for row, line in enumerate(lines[1:]):
        frame, values, fault = _parse_row(line, len(columns), previous)
        previous = frame if frame is not None else previous
        if fault is not None:
            faults.append(f"line {row + 2}: {fault}")
            continue
        frames[row] = frame
        for k, col in enumerate(source):
            if col >= 0:
                au[row, k] = values[col]
    if faults:
        raise AnnotationError(f"{path}: {join_faults(faults, 'bad lines')}")
    return AUOccurrence(stem=path.stem, path=path, frames=frames, au=au)


def _parse_row(line: str, n_aus: int, previous: int | None) -> tuple[int | None, list[int], str | None]:
    """One row's frame number (``None`` when unreadable), its AU values, and what is wrong with the
    row (``None`` when nothing); the frame number is returned even for a bad row, so the next row's
    order is checked against it."""
    tokens = [t.strip() for t in line.split(",")]
    if len(tokens) != n_aus + 1:
        return None, [], f"expected {n_aus + 1} values, found {len(tokens)} in {line!r}"
    if not tokens[0].isdigit():
        return None, [], f"frame number must be a non-negative integer, found {tokens[0]!r}"
    frame = int(tokens[0])
    if previous is not None and frame <= previous:
        return frame, [], f"frame {frame} does not follow frame {previous}"
    values = [_VALUES.get(token, UNLABELLED - 1) for token in tokens[1:]]
    bad = [token for token, value in zip(tokens[1:], values) if value < UNLABELLED]
    if bad:
        return frame, [], f"AU values must be 0, 1 or {NOT_CODED}, found {bad[0]!r}"
    return frame, values, None


def _parse_header(path: Path, line: str) -> list[int]:
    """Return the AU numbers of a header ``0,1,2,4,...`` (without the frame column)."""
    tokens = [t.strip() for t in line.split(",")]
    if tokens[0] != "0" or len(tokens) < 2 or not all(t.isdigit() for t in tokens[1:]):
        raise AnnotationError(
            f"{path}: line 1: wrong header {line!r}, expected '0' then FACS AU numbers, e.g. '0,1,2,4,6'"
        )
    numbers = [int(t) for t in tokens[1:]]
    if len(set(numbers)) != len(numbers):
        raise AnnotationError(f"{path}: line 1: an AU number appears twice in the header {line!r}")
    return numbers


def subject_name(stem: str) -> str:
    """Return the manifest name of BP4D sequence ``stem``."""
    return f"{SUBJECT_PREFIX}{stem}"


def crops_dir(bp4d_root: str | Path, stem: str) -> Path:
    """Return the crop folder of sequence ``stem``."""
    return Path(bp4d_root) / CROPS_DIR / stem


def csv_for_crops_dir(crops: str | Path) -> Path:
    """Return the AU occurrence CSV of the sequence whose crops are in ``crops`` (layout above)."""
    crops = Path(crops)
    return crops.parent.parent / AU_OCC_DIR / f"{crops.name}.csv"


def crop_paths(crops: str | Path, frames: np.ndarray) -> list[Path]:
    """Return the crop path of each CSV row: ``crops/{frame:05d}.jpg``."""
    crops = Path(crops)
    return [crops / f"{int(f):05d}.jpg" for f in frames]
