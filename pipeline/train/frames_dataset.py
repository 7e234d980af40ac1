"""Labelled face frames of one task and split, read from the packed HDF5 frame store.

``select_frames`` decides which frames a task trains or validates on: frames of the subjects whose
split for that task matches, that have a face crop (no image, no visual sample) and at least one
label for that task. Whether a frame has a face is the frame store's word, not ``labels.h5``'s:
``read_frame_labels`` gives the labels with the store's ``face_present``, because ``pack-frames``
drops crops that ``prepare`` listed (a corrupt JPEG under ``on_corrupt: drop``, an empty file), and
such a frame holds no image to learn from. ``FrameDataset`` serves those frames as ``(image uint8 (112,112,3), au (12,)
int8, expr () int8)`` so that the frames of every task share one collate and one loader; a frame set also
carries each frame's valence-arousal labels (``va`` (M, 2) float32, NaN unlabelled), which a trainer
reads by index beside the loader.

Example:
    >>> import numpy as np
    >>> a = FrameSet(("v1",), np.zeros(2, np.int32), np.array([3, 7]), np.zeros((2, 12), np.int8),
    ...              np.array([-1, -1], np.int8))
    >>> b = FrameSet(("v2",), np.zeros(1, np.int32), np.array([0]), np.full((1, 12), -1, np.int8),
    ...              np.array([4], np.int8))
    >>> both = concat_frame_sets([a, b])
    >>> len(both), both.names, both.location(2)
    (3, ('v1', 'v2'), ('v2', 0))
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.storage.frame_store import FrameStore
from pipeline.data.labels_store import SubjectLabels, read_all_labels
from pipeline.data.manifest import Manifest
from pipeline.labels import NUM_AUS, NUM_VA, TASKS, UNLABELLED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameSet:
    """Where each selected frame lives (subject, frame index) and its AU, expression and VA labels."""

    names: tuple[str, ...]      # subject names; ``subject`` indexes into this
    subject: np.ndarray         # (M,) int32
    frame: np.ndarray           # (M,) int64 frame index within the subject
    au: np.ndarray              # (M, 12) int8, -1 = unlabelled
    expr: np.ndarray            # (M,) int8, -1 = unlabelled
    va: np.ndarray | None = None  # (M, 2) float32 valence, arousal, NaN = unlabelled; None: all NaN

    def __post_init__(self) -> None:
        m = len(self.frame)
        va = np.full((m, NUM_VA), np.nan, np.float32) if self.va is None else np.asarray(self.va, np.float32)
        object.__setattr__(self, "va", va)
        if (self.subject.shape != (m,) or self.au.shape != (m, NUM_AUS) or self.expr.shape != (m,)
                or va.shape != (m, NUM_VA)):
            raise ValueError(
                f"frame set arrays disagree: subject {self.subject.shape}, frame {self.frame.shape}, "
                f"au {self.au.shape}, expr {self.expr.shape}, va {va.shape}"
            )

    def __len__(self) -> int:
        return len(self.frame)

    def location(self, i: int) -> tuple[str, int]:
        """Return ``(subject name, frame index)`` of item ``i``."""
        return self.names[int(self.subject[i])], int(self.frame[i])

    def subset(self, indices: Sequence[int] | np.ndarray) -> FrameSet:
        """Return the items at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return FrameSet(self.names, self.subject[idx], self.frame[idx], self.au[idx], self.expr[idx], self.va[idx])


def empty_frame_set() -> FrameSet:
    """A frame set without frames."""
    return FrameSet(
        (), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, NUM_AUS), np.int8), np.zeros(0, np.int8)
    )


def read_frame_labels(labels_path: str | Path, frames_path: str | Path) -> dict[str, SubjectLabels]:
    """Every subject's labels from ``labels.h5``, with the frame store's ``face_present``.

    A frame counts as a face only where the store holds its image, so a crop that ``pack-frames``
    dropped is neither trained on nor scored (it would read as a black image). A store packed from
    another ``prepare`` output (a subject missing, another frame count) is an error naming both files.
    """
    labels = read_all_labels(labels_path)
    out: dict[str, SubjectLabels] = {}
    lost: dict[str, int] = {}
    with FrameStore(frames_path) as store:
        stored = set(store.names())
        for name, item in labels.items():
            if name not in stored:
                raise ValueError(
                    f"{frames_path}: no subject {name!r} of {labels_path}; run pack-frames again on this prepare output"
                )
            face = np.asarray(store.face_present(name), dtype=bool)
            if face.shape != item.face_present.shape:
                raise ValueError(
                    f"{frames_path}: subject {name!r} has {len(face)} frames but {labels_path} has "
                    f"{item.n_frames}; run pack-frames again on this prepare output"
                )
            if (item.face_present & ~face).any():
                lost[name] = int((item.face_present & ~face).sum())
            out[name] = dataclasses.replace(item, face_present=face)
    if lost:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(lost.items()))
        log.warning(
            "%s: %d crop(s) listed in %s have no image in the store (dropped by pack-frames); "
            "they are not used: %s", frames_path, sum(lost.values()), labels_path, listed,
        )
    return out


def labelled_mask(labels: SubjectLabels, task: str) -> np.ndarray:
    """(N,) bool: frames with a face and at least one label of ``task`` ("au", "expr" or "va")."""
    return _labelled(labels.au, labels.expr, labels.va, task) & labels.face_present


def select_frames(
    manifest: Manifest,
    labels: Mapping[str, SubjectLabels],
    task: str,
    split: str,
    sources: Iterable[str] = ("affwild2",),
    exclude: Collection[str] = (),
) -> FrameSet:
    """Frames of ``task`` in ``split`` (``train``/``validation``) from subjects of ``sources``, less
    the subjects named in ``exclude`` (the held-out selection subjects).

    The leakage-free protocol is already encoded in the manifest's splits (``prepare`` marks
    validation subjects whose video trains the other task as ``excluded``), so this only filters.
    """
    records = [r for r in manifest.in_split(task, split, sources=tuple(sources)) if r.name not in exclude]
    names: list[str] = []
    parts: list[FrameSet] = []
    for record in records:
        if record.name not in labels:
            raise KeyError(f"labels file has no subject {record.name!r} listed in the manifest")
        item = labels[record.name]
        keep = np.flatnonzero(labelled_mask(item, task))
        if len(keep) == 0:
            continue
        parts.append(FrameSet(
            (record.name,), np.zeros(len(keep), np.int32), keep.astype(np.int64),
            item.au[keep].astype(np.int8), item.expr[keep].astype(np.int8), item.va[keep],
        ))
        names.append(record.name)
    return concat_frame_sets(parts)


def select_validation_frames(
    manifest: Manifest, labels: Mapping[str, SubjectLabels], sources: Iterable[str] = ("affwild2",),
    face: bool = True,
) -> FrameSet:
    """The union of every task's validation frames, so one forward pass scores every task.

    A frame keeps a task's labels only when its subject is in that task's validation split (they
    are ``-1``, or NaN for VA, otherwise), so ``has_labels(fs, task)`` recovers exactly the frames
    ``select_frames(..., task, "validation")`` would give. ``face=False`` gives the labelled
    validation frames *without* a face crop instead (labels only: they hold no image).
    """
    subjects = {task: [r.name for r in manifest.in_split(task, "validation", sources=tuple(sources))]
                for task in TASKS}
    return select_subject_frames(manifest, labels, subjects, face)


def select_subject_frames(
    manifest: Manifest, labels: Mapping[str, SubjectLabels], subjects: Mapping[str, Collection[str]],
    face: bool = True,
) -> FrameSet:
    """Labelled frames of each task's ``subjects`` (``{"au": names, "expr": names, "va": names}``; a
    task left out has none), in manifest order.

    A frame keeps a task's labels only when its subject is listed for that task (``-1``, or NaN for
    VA, otherwise). ``face`` picks the frames with a face crop (``True``) or the labelled frames
    without one.
    """
    parts = []
    for record in manifest.subjects:
        listed = {task: record.name in subjects.get(task, ()) for task in TASKS}
        if not any(listed.values()):
            continue
        if record.name not in labels:
            raise KeyError(f"labels file has no subject {record.name!r} listed in the manifest")
        item = labels[record.name]
        au = item.au if listed["au"] else np.full_like(item.au, UNLABELLED)
        expr = item.expr if listed["expr"] else np.full_like(item.expr, UNLABELLED)
        va = item.va if listed["va"] else np.full_like(item.va, np.nan)
        present = item.face_present if face else ~item.face_present
        keep = np.flatnonzero(np.any([_labelled(au, expr, va, task) for task in TASKS], axis=0) & present)
        if len(keep):
            parts.append(FrameSet((record.name,), np.zeros(len(keep), np.int32), keep.astype(np.int64),
                                  au[keep].astype(np.int8), expr[keep].astype(np.int8), va[keep]))
    return concat_frame_sets(parts)


def has_labels(frame_set: FrameSet, task: str) -> np.ndarray:
    """(M,) bool: items carrying at least one label of ``task``."""
    return _labelled(frame_set.au, frame_set.expr, frame_set.va, task)


def _labelled(au: np.ndarray, expr: np.ndarray, va: np.ndarray, task: str) -> np.ndarray:
    if task == "au":
        return (au != UNLABELLED).any(axis=1)
    if task == "expr":
        return expr != UNLABELLED
    if task == "va":
        return ~np.isnan(va).all(axis=1)
    raise ValueError(f"task must be 'au', 'expr' or 'va', got {task!r}")


def concat_frame_sets(parts: Sequence[FrameSet]) -> FrameSet:
    """Concatenate frame sets (subject names are merged; a name may appear in several parts)."""
    if not parts:
        return empty_frame_set()
    names: list[str] = []
    position: dict[str, int] = {}
    subjects = []
    for part in parts:
        remap = np.array([position.setdefault(n, len(position)) for n in part.names], dtype=np.int32)
        names = list(position)
        subjects.append(remap[part.subject] if len(part) else part.subject)
    return FrameSet(
        tuple(names),
        np.concatenate(subjects).astype(np.int32),
        np.concatenate([p.frame for p in parts]).astype(np.int64),
        np.concatenate([p.au for p in parts]).astype(np.int8),
        np.concatenate([p.expr for p in parts]).astype(np.int8),
        np.concatenate([p.va for p in parts]).astype(np.float32),
    )


class FrameDataset(Dataset):
    """The images and labels of a :class:`FrameSet`, read lazily from a frame store (HDF5).

    ``__getitems__`` reads a whole batch with one store call per subject, which is what the
    ``DataLoader`` uses when a batch sampler is given.
    """

    def __init__(self, frames_path: str | Path, frame_set: FrameSet) -> None:
        self.store = FrameStore(frames_path)  # reopens its HDF5 handle in each worker process
        self.frame_set = frame_set

    def __len__(self) -> int:
        return len(self.frame_set)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"frame indices out of range [0, {len(self)}): {idx.min()}..{idx.max()}")
        fs = self.frame_set
        images = np.zeros((len(idx), 112, 112, 3), np.uint8)
        subjects = fs.subject[idx]
        for s in np.unique(subjects):
            rows = np.flatnonzero(subjects == s)
            images[rows] = self.store.read(fs.names[int(s)], fs.frame[idx[rows]])
        au = torch.from_numpy(fs.au[idx])
        expr = torch.from_numpy(fs.expr[idx])
        image_t = torch.from_numpy(images)
        return [(image_t[k], au[k], expr[k]) for k in range(len(idx))]
