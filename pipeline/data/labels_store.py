"""Per-frame labels of every subject, in one HDF5 file written by ``prepare``.

Layout: ``/<subject>/au`` (N, 12) int8, ``/<subject>/expr`` (N,) int8, ``/<subject>/va`` (N, 2)
float32 (valence, arousal), ``/<subject>/face_present`` (N,) bool, where N is the subject's aligned
frame count and ``-1`` (AU, EXPR) or NaN (VA) marks an unlabelled entry. A store written before VA
was stored has no ``va``; it reads as all NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipeline.fsio import atomic_path
from pipeline.labels import NUM_AUS, NUM_VA


@dataclass(frozen=True)
class SubjectLabels:
    """Aligned per-frame labels of one subject."""

    au: np.ndarray            # (N, 12) int8, -1 = unlabelled
    expr: np.ndarray          # (N,) int8, -1 = unlabelled
    face_present: np.ndarray  # (N,) bool
    va: np.ndarray | None = field(default=None)  # (N, 2) float32 valence, arousal, NaN = unlabelled; None: all NaN

    def __post_init__(self) -> None:
        n = len(self.expr)
        va = unlabelled_va(n) if self.va is None else self.va
        object.__setattr__(self, "va", va)
        if self.au.shape != (n, NUM_AUS) or self.face_present.shape != (n,) or va.shape != (n, NUM_VA):
            raise ValueError(
                f"label shapes disagree: au {self.au.shape}, expr {self.expr.shape}, "
                f"va {va.shape}, face_present {self.face_present.shape}"
            )

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.expr)


def unlabelled_va(n: int) -> np.ndarray:
    """(n, 2) float32 valence and arousal with no frame labelled (NaN)."""
    return np.full((n, NUM_VA), np.nan, dtype=np.float32)


def write_labels(path: str | Path, labels: dict[str, SubjectLabels]) -> None:
    """Write every subject's labels to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, item in labels.items():
                group = fh.create_group(name)
                group.create_dataset("au", data=item.au.astype(np.int8), compression="gzip")
                group.create_dataset("expr", data=item.expr.astype(np.int8), compression="gzip")
                group.create_dataset("va", data=np.asarray(item.va, dtype=np.float32), compression="gzip")
                group.create_dataset("face_present", data=item.face_present.astype(bool), compression="gzip")


def read_labels(path: str | Path, name: str) -> SubjectLabels:
    """Read one subject's labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (run the prepare stage first)")
    with h5py.File(path, "r") as fh:
        if name not in fh:
            raise KeyError(f"{path}: no labels for subject {name!r}")
        return _subject(fh[name])


def read_all_labels(path: str | Path) -> dict[str, SubjectLabels]:
    """Read the labels of every subject in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (run the prepare stage first)")
    with h5py.File(path, "r") as fh:
        return {name: _subject(group) for name, group in fh.items()}


def _subject(group: h5py.Group) -> SubjectLabels:
    """One subject's labels from its group; no ``va`` dataset (an older store) reads as all NaN."""
    va = group["va"][()] if "va" in group else None
    return SubjectLabels(au=group["au"][()], expr=group["expr"][()], face_present=group["face_present"][()], va=va)
