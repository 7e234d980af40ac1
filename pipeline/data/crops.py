"""Which file holds the face crop of frame i of a subject (the one place this mapping lives).

Aff-Wild2: ``<crops_dir>/{i+1:05d}.jpg``. BP4D: ``<crops_dir>/{frame:05d}.jpg`` where ``frame`` is
the frame number on row i of the sequence's AU occurrence CSV.

Example:
    >>> from pipeline.data.manifest import SubjectRecord
    >>> rec = SubjectRecord(name="v1", video="v1", crops_dir="c/v1", n_frames=2)
    >>> [p.name for p in crop_paths(rec)]
    ['00001.jpg', '00002.jpg']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import bp4d
from pipeline.data.affwild2 import crop_name
from pipeline.data.manifest import SubjectRecord


def crop_paths(record: SubjectRecord) -> list[Path]:
    """Return the crop path of each of ``record``'s ``n_frames`` frames (the files may not exist)."""
    if record.crops_dir is None:
        raise ValueError(f"subject {record.name!r} has no crops folder in the manifest")
    crops = Path(record.crops_dir)
    if record.source == "bp4d":
        frames = bp4d.read_au_occ(bp4d.csv_for_crops_dir(crops)).frames
        if len(frames) != record.n_frames:
            raise ValueError(
                f"{bp4d.csv_for_crops_dir(crops)}: {len(frames)} rows but the manifest says "
                f"{record.n_frames} frames for {record.name!r}; run prepare again"
            )
        return bp4d.crop_paths(crops, frames)
    return [crops / crop_name(i) for i in range(record.n_frames)]


def present_mask(paths: list[Path]) -> np.ndarray:
    """Return (len(paths),) bool: which paths exist, listing each folder once."""
    listings: dict[Path, set[str]] = {}
    mask = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        names = listings.get(path.parent)
        if names is None:
            names = {p.name for p in path.parent.iterdir()} if path.parent.is_dir() else set()
            listings[path.parent] = names
        mask[i] = path.name in names
    return mask
