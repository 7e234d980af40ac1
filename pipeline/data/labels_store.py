"""Per-frame labels of every subject, in one HDF5 file written by ``prepare``.

Layout: ``/<subject>/au`` (N, 12) int8, ``/<subject>/expr`` (N,) int8, ``/<subject>/face_present``
(N,) bool, where N is the subject's aligned frame count and ``-1`` marks an unlabelled entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.fsio import atomic_path
from pipeline.labels import NUM_AUS


@dataclass(frozen=True)
class SubjectLabels:
    """Aligned per-frame labels of one subject."""

    au: np.ndarray            # (N, 12) int8, -1 = unlabelled
    expr: np.ndarray          # (N,) int8, -1 = unlabelled
    face_present: np.ndarray  # (N,) bool

    def __post_init__(self) -> None:
        n = len(self.expr)
        if self.au.shape != (n, NUM_AUS) or self.face_present.shape != (n,):
            raise ValueError(
                f"label shapes disagree: au {self.au.shape}, expr {self.expr.shape}, "
                f"face_present {self.face_present.shape}"
            )

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.expr)


def write_labels(path: str | Path, labels: dict[str, SubjectLabels]) -> None:
    """Write every subject's labels to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, item in labels.items():
                group = fh.create_group(name)
                group.create_dataset("au", data=item.au.astype(np.int8), compression="gzip")
                group.create_dataset("expr", data=item.expr.astype(np.int8), compression="gzip")
                group.create_dataset("face_present", data=item.face_present.astype(bool), compression="gzip")


def read_labels(path: str | Path, name: str) -> SubjectLabels:
    """Read one subject's labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (run the prepare stage first)")
    with h5py.File(path, "r") as fh:
        if name not in fh:
            raise KeyError(f"{path}: no labels for subject {name!r}")
        group = fh[name]
        return SubjectLabels(
            au=group["au"][()], expr=group["expr"][()], face_present=group["face_present"][()]
        )


def read_all_labels(path: str | Path) -> dict[str, SubjectLabels]:
    """Read the labels of every subject in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (run the prepare stage first)")
    with h5py.File(path, "r") as fh:
        return {
            name: SubjectLabels(au=g["au"][()], expr=g["expr"][()], face_present=g["face_present"][()])
            for name, g in fh.items()
        }
