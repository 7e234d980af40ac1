"""Discovery in the Aff-Wild2 (ABAW2) layout: annotation files, videos, face crops, frame alignment.

Layout under ``root``::

    annotations/AU_Set/{Train_Set,Validation_Set}/<name>.txt
    annotations/EXPR_Set/{Train_Set,Validation_Set}/<name>.txt
    annotations/VA_Set/{Train_Set,Validation_Set}/<name>.txt    (optional: a copy may lack VA_Set)
    cropped_aligned/<name>/00001.jpg ...        crop of frame i is {i+1:05d}.jpg, some are missing
    <any folder, e.g. videos/batch1>/<video>.mp4|.avi

``<name>`` is a video stem, or ``<video>_left`` / ``_right`` / ``_main`` for one face of a
two-subject video; all faces of a video share its media file and audio.

Example (not run here: it needs an Aff-Wild2 layout root)::

    files = find_annotations(root)
    videos = find_videos(root)
    video_for("video5_left", videos, files[0].path)
    # PosixPath('root/videos/batch2/video5.mp4')
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.labels import UNLABELLED

log = logging.getLogger(__name__)

ANNOTATIONS_DIR = "annotations"
CROPS_DIR = "cropped_aligned"
TASK_DIRS: dict[str, str] = {"au": "AU_Set", "expr": "EXPR_Set", "va": "VA_Set"}
SPLIT_DIRS: dict[str, str] = {"train": "Train_Set", "validation": "Validation_Set"}
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi")
SUBJECT_SUFFIXES: tuple[str, ...] = ("_left", "_right", "_main")


class MissingVideoError(FileNotFoundError):
    """An annotation file has no matching video; the message names the annotation file."""


class FrameCountError(ValueError):
    """Annotation lines and video frames differ by more than the tolerance; names both files."""


@dataclass(frozen=True)
class AnnotationFile:
    """One annotation text file: whose, for which task, in which split."""

    name: str    # file stem, the subject name
    task: str    # "au", "expr" or "va"
    split: str   # "train" or "validation"
    path: Path


def find_annotations(root: str | Path) -> list[AnnotationFile]:
    """Return every annotation file under ``root/annotations``, sorted by task, split and name."""
    root = Path(root)
    base = root / ANNOTATIONS_DIR
    if not base.is_dir():
        raise FileNotFoundError(f"{root}: no {ANNOTATIONS_DIR}/ folder (is this an Aff-Wild2 root?)")
    files: list[AnnotationFile] = []
    for task, task_dir in TASK_DIRS.items():
        for split, split_dir in SPLIT_DIRS.items():
            folder = base / task_dir / split_dir
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.txt")):
                files.append(AnnotationFile(name=path.stem, task=task, split=split, path=path))
    if not files:
        raise FileNotFoundError(
            f"{base}: no annotation files in {{AU_Set,EXPR_Set,VA_Set}}/{{Train_Set,Validation_Set}}/"
        )
    return files


def group_by_subject(files: Iterable[AnnotationFile]) -> dict[str, dict[str, AnnotationFile]]:
    """Group annotation files as ``{name: {task: file}}``; a name twice in one task is an error."""
    subjects: dict[str, dict[str, AnnotationFile]] = {}
    for item in files:
        tasks = subjects.setdefault(item.name, {})
        if item.task in tasks:
            raise ValueError(
                f"subject {item.name!r} is annotated twice for {item.task}: {tasks[item.task].path} and {item.path}"
            )
        tasks[item.task] = item
    return dict(sorted(subjects.items()))


def find_videos(root: str | Path, exclude: Iterable[str | Path] = ()) -> dict[str, list[Path]]:
    """Map each video stem to the .mp4/.avi files with that stem anywhere under ``root``.

    ``annotations/`` and every ``cropped_aligned/`` folder are skipped (the latter holds millions of
    crops), as are hidden folders and the folders in ``exclude``.
    """
    root = Path(root)
    skip = {os.path.abspath(p) for p in exclude}
    skip.add(os.path.abspath(root / ANNOTATIONS_DIR))
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if d != CROPS_DIR and not d.startswith(".") and os.path.abspath(os.path.join(dirpath, d)) not in skip
        )
        for filename in sorted(filenames):
            stem, ext = os.path.splitext(filename)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, []).append(Path(dirpath) / filename)
    return found


def video_stem_candidates(name: str) -> list[str]:
    """Return the media stems a subject may use: its own name, then without ``_left``/``_right``/``_main``."""
    candidates = [name]
    for suffix in SUBJECT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            candidates.append(name[: -len(suffix)])
    return candidates


def video_for(name: str, videos: dict[str, list[Path]], annotation: Path) -> Path:
    """Return the video of subject ``name``; errors name ``annotation`` when none or several match."""
    candidates = video_stem_candidates(name)
    for stem in candidates:
        paths = videos.get(stem)
        if not paths:
            continue
        if len(paths) > 1:
            listed = ", ".join(str(p) for p in paths)
            raise ValueError(f"{annotation}: several videos have the stem {stem!r}: {listed}")
        return paths[0]
    wanted = " or ".join(f"{s}{{{','.join(VIDEO_EXTENSIONS)}}}" for s in candidates)
    raise MissingVideoError(f"{annotation}: no video found for subject {name!r} (looked for {wanted} under the root)")


def crop_name(index: int) -> str:
    """Return the file name of frame ``index``'s crop (0-based index, 1-based 5-digit name)."""
    return f"{index + 1:05d}.jpg"


def align_to_video(
    labels: np.ndarray, n_frames: int, tolerance: int, annotation: Path, video: Path,
    fill: float = UNLABELLED,
) -> tuple[np.ndarray, int]:
    """Pad (with ``fill``: -1, NaN for VA) or trim ``labels`` to ``n_frames`` rows; return them and lines minus frames.

    A difference larger than ``tolerance`` is a :class:`FrameCountError` naming both files.
    """
    delta = len(labels) - n_frames
    if abs(delta) > tolerance:
        raise FrameCountError(
            f"{annotation}: {len(labels)} annotation lines but video {video} has {n_frames} frames "
            f"(difference {delta:+d} exceeds the tolerance of {tolerance})"
        )
    if delta > 0:
        log.info("%s: trimmed %d annotation line(s) to the video's %d frames", annotation, delta, n_frames)
        return labels[:n_frames], delta
    if delta < 0:
        log.info("%s: padded %d missing line(s) as unlabelled to the video's %d frames", annotation, -delta, n_frames)
        pad = np.full((-delta,) + labels.shape[1:], fill, dtype=labels.dtype)
        return np.concatenate([labels, pad]), delta
    return labels, 0
