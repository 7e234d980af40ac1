"""The manifest: one record per annotated subject (a video, or one face of a two-subject video).

``prepare`` writes it as JSON; every later stage reads it to know which subjects exist, which video
and audio they come from, their frame counts and which split each task puts them in.

Split values per task (``"au"``, ``"expr"``, ``"va"``): ``"train"``, ``"validation"``, ``"excluded"``
(a validation subject dropped by the leakage-free protocol because its video is in a task's
training set) or ``None`` (no annotation for that task). A manifest written before VA was read has
no ``va_split``: it reads as ``None``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline.fsio import write_json

SPLITS: tuple[str, ...] = ("train", "validation", "excluded")
SOURCES: tuple[str, ...] = ("affwild2", "bp4d")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SubjectRecord:
    """One annotated subject and the media it is read from."""

    name: str                   # annotation stem, e.g. "video5_left"; the key used by every store
    video: str                  # media stem shared by _left/_right/_main subjects, e.g. "video5"
    source: str = "affwild2"    # "affwild2" or "bp4d"
    video_path: str | None = None   # path of the .mp4/.avi (None for BP4D image sequences)
    crops_dir: str | None = None    # folder of 112x112 face crops
    fps: float | None = None
    n_frames: int = 0           # frames after aligning the annotation to the video (pad/trim)
    has_audio: bool = False
    sample_rate: int | None = None
    au_split: str | None = None
    expr_split: str | None = None
    n_au_labelled: int = 0      # frames with a full AU label row
    n_expr_labelled: int = 0    # frames with an expression label
    n_faces: int = 0            # frames whose face crop exists
    frame_delta: int = 0        # annotation lines minus video frames, before pad/trim
    va_split: str | None = None
    n_va_labelled: int = 0      # frames with valence and arousal

    def split(self, task: str) -> str | None:
        """Return this subject's split for task ``"au"``, ``"expr"`` or ``"va"``."""
        if task == "au":
            return self.au_split
        if task == "expr":
            return self.expr_split
        if task == "va":
            return self.va_split
        raise ValueError(f"task must be 'au', 'expr' or 'va', got {task!r}")


@dataclass(frozen=True)
class Manifest:
    """All subjects of a prepared dataset plus the protocol's bookkeeping."""

    root: str
    subjects: tuple[SubjectRecord, ...]
    excluded_frames: dict[str, int] = field(default_factory=dict)  # {"au": n, "expr": n, "va": n}
    version: int = MANIFEST_VERSION

    def by_name(self, name: str) -> SubjectRecord:
        """Return the subject called ``name``."""
        for record in self.subjects:
            if record.name == name:
                return record
        raise KeyError(f"subject {name!r} is not in the manifest")

    def names(self) -> list[str]:
        """Return all subject names in manifest order."""
        return [r.name for r in self.subjects]

    def in_split(self, task: str, split: str, sources: Iterable[str] = ("affwild2",)) -> list[SubjectRecord]:
        """Return subjects whose ``task`` split is ``split``, restricted to ``sources``."""
        sources = tuple(sources)
        return [r for r in self.subjects if r.split(task) == split and r.source in sources]

    def videos(self) -> dict[str, list[SubjectRecord]]:
        """Group Aff-Wild2 subjects by the video (and audio track) they share."""
        groups: dict[str, list[SubjectRecord]] = {}
        for record in self.subjects:
            if record.source == "affwild2":
                groups.setdefault(record.video, []).append(record)
        return groups


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write ``manifest`` to ``path`` as JSON (atomically)."""
    data = dataclasses.asdict(manifest)
    write_json(path, data)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest JSON written by :func:`write_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run the prepare stage first)")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}")
    known = {f.name for f in dataclasses.fields(SubjectRecord)}
    subjects = []
    for i, raw in enumerate(data["subjects"]):
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: subject {i} has unknown keys {sorted(unknown)}")
        subjects.append(SubjectRecord(**raw))
    return Manifest(
        root=data["root"],
        subjects=tuple(subjects),
        excluded_frames=dict(data.get("excluded_frames", {})),
        version=data["version"],
    )
