"""The ``prepare`` stage: an Aff-Wild2 (+ BP4D) root in, ``manifest.json``, ``labels.h5`` and ``report.json`` out.

For every annotated subject it finds the video, probes it (fps, frame count, audio), reads the AU
and EXPR annotations, aligns them to the video's frame count (pad with -1 / trim within
``frame_tolerance``), records which face crops exist, then applies the leakage-free validation
protocol (:mod:`pipeline.data.protocol`). The three files are published together as one directory.

Example (not run here: it needs a dataset; tests/stages/test_prepare.py runs it on a synthetic one)::

    manifest = prepare_dataset(Path("data/synthetic"), Path("cache/prepared"),
                               PrepareConfig(), bp4d_root=Path("data/synthetic/BP4D"))
    manifest.by_name("video5_left").n_frames
    # 300
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline import config
from pipeline.data import bp4d
from pipeline.data.affwild2 import (
    CROPS_DIR,
    AnnotationFile,
    align_to_video,
    find_annotations,
    find_videos,
    group_by_subject,
    video_for,
)
from pipeline.data.annotations import read_annotation
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.labels_store import SubjectLabels, write_labels
from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from pipeline.data.protocol import apply_protocol, labelled_frames
from pipeline.data.video import VideoInfo, probe_video
from pipeline.fsio import atomic_path, write_json
from pipeline.labels import NUM_AUS, TASKS, UNLABELLED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """The ``prepare`` params section."""

    frame_tolerance: int = 5    # largest |annotation lines - video frames| that is padded/trimmed
    frame_count: Literal["header", "demux", "decode"] = "demux"   # how video frames are counted
    check_crops: Literal["exists", "header"] = "exists"  # "header" also opens each crop as a JPEG
    skip_invalid: bool = False  # leave out (and report) subjects whose files are bad instead of failing

    def __post_init__(self) -> None:
        if self.frame_tolerance < 0:
            raise config.ConfigError(f"prepare.frame_tolerance must be >= 0, got {self.frame_tolerance}")


class PrepareError(ValueError):
    """One or more subjects could not be prepared; the message lists each file and what is wrong."""


def prepare_dataset(
    root: Path, out_dir: Path, cfg: PrepareConfig, bp4d_root: Path | None = None, progress: bool = False
) -> Manifest:
    """Prepare ``root`` (and optionally ``bp4d_root``) into ``out_dir``; return the manifest."""
    root, out_dir = Path(root), Path(out_dir)
    subjects = group_by_subject(find_annotations(root))
    videos = find_videos(root, exclude=[bp4d_root] if bp4d_root is not None else [])
    records: list[SubjectRecord] = []
    labels: dict[str, SubjectLabels] = {}
    deltas: list[dict[str, Any]] = []
    problems: list[str] = []
    probes: dict[Path, VideoInfo | Exception] = {}
    for name, files in tqdm(subjects.items(), desc="prepare", unit="subject", disable=not progress):
        try:
            record, item, subject_deltas = _prepare_subject(root, name, files, videos, probes, cfg)
        except (ValueError, FileNotFoundError) as exc:
            problems.append(str(exc))
            continue
        records.append(record)
        labels[name] = item
        deltas.extend(subject_deltas)
    if bp4d_root is not None:
        for record, item in _prepare_bp4d(Path(bp4d_root), cfg, problems):
            if record.name in labels:
                problems.append(f"{bp4d_root}: BP4D sequence name {record.name!r} collides with an Aff-Wild2 subject")
                continue
            records.append(record)
            labels[record.name] = item
    problems = list(dict.fromkeys(problems))  # subjects sharing a bad video report it once
    if problems and not cfg.skip_invalid:
        head = f"{len(problems)} problem(s) in the dataset: " if len(problems) > 1 else ""
        raise PrepareError(head + "; ".join(problems))
    for problem in problems:
        log.warning("skipped: %s", problem)
    if not records:
        raise PrepareError(f"{root}: no subject could be prepared")
    records, excluded = apply_protocol(records)
    manifest = Manifest(root=str(root), subjects=tuple(records), excluded_frames=excluded)
    report = build_report(manifest, labels, deltas, problems, cfg, videos, bp4d_root)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_manifest(manifest, tmp / "manifest.json")
        write_labels(tmp / "labels.h5", labels)
        write_json(tmp / "report.json", report)
    log.info(
        "prepared %d subjects; the protocol excluded %d AU and %d EXPR validation frames",
        len(records), excluded["au"], excluded["expr"],
    )
    return manifest


def _probe(path: Path, probes: dict[Path, VideoInfo | Exception], cfg: PrepareConfig) -> VideoInfo:
    """Probe ``path`` once for all subjects that share it (failures are remembered too)."""
    if path not in probes:
        try:
            probes[path] = probe_video(path, cfg.frame_count)
        except (ValueError, FileNotFoundError) as exc:
            probes[path] = exc
    result = probes[path]
    if isinstance(result, Exception):
        raise result
    return result


def _prepare_subject(
    root: Path,
    name: str,
    files: dict[str, AnnotationFile],
    videos: dict[str, list[Path]],
    probes: dict[Path, VideoInfo | Exception],
    cfg: PrepareConfig,
) -> tuple[SubjectRecord, SubjectLabels, list[dict[str, Any]]]:
    """Build one Aff-Wild2 subject's record and aligned labels."""
    first = next(iter(files.values())).path
    video_path = video_for(name, videos, first)
    info = _probe(video_path, probes, cfg)
    n = info.n_frames
    aligned: dict[str, np.ndarray] = {}
    deltas: list[dict[str, Any]] = []
    for task, item in files.items():
        raw = read_annotation(item.path, task)
        aligned[task], delta = align_to_video(raw, n, cfg.frame_tolerance, item.path, video_path)
        if delta:
            deltas.append({"subject": name, "task": task, "file": str(item.path), "video": str(video_path),
                           "lines": len(raw), "frames": n, "delta": delta})
    au = aligned.get("au", np.full((n, NUM_AUS), UNLABELLED, dtype=np.int8))
    expr = aligned.get("expr", np.full(n, UNLABELLED, dtype=np.int8))
    record = SubjectRecord(
        name=name,
        video=video_path.stem,
        source="affwild2",
        video_path=str(video_path),
        crops_dir=str(root / CROPS_DIR / name),
        fps=info.fps,
        n_frames=n,
        has_audio=info.has_audio,
        sample_rate=info.sample_rate,
        au_split=files["au"].split if "au" in files else None,
        expr_split=files["expr"].split if "expr" in files else None,
        frame_delta=max((d["delta"] for d in deltas), key=abs, default=0),
    )
    face = _faces(record, crop_paths(record), cfg)
    return _with_counts(record, au, expr, face), SubjectLabels(au=au, expr=expr, face_present=face), deltas


def _prepare_bp4d(
    bp4d_root: Path, cfg: PrepareConfig, problems: list[str]
) -> list[tuple[SubjectRecord, SubjectLabels]]:
    """Build a record and labels per BP4D sequence (AU training data only)."""
    out = []
    for path in bp4d.find_au_occ(bp4d_root):
        try:
            occ = bp4d.read_au_occ(path)
            crops = bp4d.crops_dir(bp4d_root, occ.stem)
            n = len(occ.frames)
            name = bp4d.subject_name(occ.stem)
            record = SubjectRecord(
                name=name, video=name, source="bp4d", crops_dir=str(crops), n_frames=n,
                au_split="train", expr_split=None,
            )
            face = _faces(record, bp4d.crop_paths(crops, occ.frames), cfg)
        except (ValueError, FileNotFoundError) as exc:
            problems.append(str(exc))
            continue
        expr = np.full(n, UNLABELLED, dtype=np.int8)
        out.append((_with_counts(record, occ.au, expr, face), SubjectLabels(au=occ.au, expr=expr, face_present=face)))
    return out


def _faces(record: SubjectRecord, paths: list[Path], cfg: PrepareConfig) -> np.ndarray:
    """Return the face-present mask of ``paths``; with ``check_crops: header`` each crop must be a JPEG."""
    mask = present_mask(paths)
    if not mask.any():
        log.warning("%s: no face crops found in %s", record.name, record.crops_dir)
    if cfg.check_crops == "header":
        for i in np.flatnonzero(mask):
            _check_jpeg_header(paths[i], int(i))
    return mask


def _check_jpeg_header(path: Path, frame: int) -> None:
    try:
        with Image.open(path) as image:
            fmt = image.format
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ValueError(f"{path}: frame {frame}: not a readable JPEG crop ({exc})") from exc
    if fmt != "JPEG":
        raise ValueError(f"{path}: frame {frame}: crop is {fmt}, not JPEG")


def _with_counts(record: SubjectRecord, au: np.ndarray, expr: np.ndarray, face: np.ndarray) -> SubjectRecord:
    """Return ``record`` with its label and face counts filled in."""
    return dataclasses.replace(
        record,
        n_au_labelled=int((au >= 0).any(axis=1).sum()),
        n_expr_labelled=int((expr >= 0).sum()),
        n_faces=int(face.sum()),
    )


def build_report(
    manifest: Manifest,
    labels: dict[str, SubjectLabels],
    deltas: list[dict[str, Any]],
    problems: list[str],
    cfg: PrepareConfig,
    videos: dict[str, list[Path]],
    bp4d_root: Path | None,
) -> dict[str, Any]:
    """Return the ``report.json`` content: counts per task and split, protocol removals, pad/trim deltas."""
    affwild = [r for r in manifest.subjects if r.source == "affwild2"]
    splits: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        splits[task] = {}
        for split in ("train", "validation", "excluded"):
            members = [r for r in affwild if r.split(task) == split]
            splits[task][split] = {
                "subjects": len(members),
                "videos": len({r.video for r in members}),
                "frames": sum(r.n_frames for r in members),
                "labelled": sum(labelled_frames(r, task) for r in members),
                "labelled_with_face": sum(_labelled_with_face(labels[r.name], task) for r in members),
            }
    bp4d_records = [r for r in manifest.subjects if r.source == "bp4d"]
    used_videos = {r.video for r in affwild}
    return {
        "root": manifest.root,
        "bp4d_root": None if bp4d_root is None else str(bp4d_root),
        "config": config.to_dict(cfg),
        "subjects": len(affwild),
        "videos": len(used_videos),
        "videos_without_audio": sorted({r.video for r in affwild if not r.has_audio}),
        "unannotated_videos": sorted(set(videos) - used_videos),
        "fps": dict(sorted(Counter(f"{r.fps:.3f}" for r in affwild).items())),
        "frames": sum(r.n_frames for r in affwild),
        "faces": sum(r.n_faces for r in affwild),
        "splits": splits,
        "protocol": {
            "excluded_frames": dict(manifest.excluded_frames),
            "excluded_subjects": {t: [r.name for r in affwild if r.split(t) == "excluded"] for t in TASKS},
        },
        "alignment": {"tolerance": cfg.frame_tolerance, "padded_or_trimmed": deltas},
        "bp4d": {
            "subjects": len(bp4d_records),
            "frames": sum(r.n_frames for r in bp4d_records),
            "au_labelled": sum(r.n_au_labelled for r in bp4d_records),
            "faces": sum(r.n_faces for r in bp4d_records),
        },
        "skipped": problems,
    }


def _labelled_with_face(item: SubjectLabels, task: str) -> int:
    labelled = (item.au >= 0).any(axis=1) if task == "au" else item.expr >= 0
    return int((labelled & item.face_present).sum())
