"""The ``prepare`` stage: an Aff-Wild2 (+ BP4D) root in, ``manifest.json``, ``labels.h5`` and ``report.json`` out.

For every annotated subject it finds the video, probes it (fps, frame count, audio), reads the AU,
EXPR and (where the copy has them) VA annotations, aligns them to the video's frame count (pad as
unlabelled / trim within ``frame_tolerance``), records which face crops exist, then applies the
leakage-free validation protocol (:mod:`pipeline.data.protocol`) over the three tasks. The three
files are published together as one directory.

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
from tqdm import tqdm

from pipeline import config
from pipeline.data import bp4d
from pipeline.data.affwild2 import (
    CROPS_DIR,
    AnnotationFile,
    FrameCountError,
    align_to_video,
    find_annotations,
    find_videos,
    group_by_subject,
    video_for,
)
from pipeline.data.annotations import read_annotation
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.faults import join_faults
from pipeline.data.labels_store import SubjectLabels, unlabelled_va, write_labels
from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from pipeline.data.protocol import apply_protocol, exclusions, labelled_frames
from pipeline.data.video import VideoInfo, probe_video
from pipeline.fsio import atomic_path, write_json
from pipeline.jpeg import ImageError, jpeg_size
from pipeline.labels import ANNOTATED_TASKS, NUM_AUS, UNLABELLED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """The ``prepare`` params section."""

    frame_tolerance: int = 5    # largest |annotation lines - video frames| that is padded/trimmed
    frame_count: Literal["header", "demux", "decode"] = "demux"   # how video frames are counted
    check_crops: Literal["exists", "header"] = "exists"  # "header" also opens each crop as a JPEG
    skip_invalid: bool = False  # leave out (and report) subjects whose files are bad instead of failing
    audio_short_tolerance: float = 0.02  # largest share of a video's duration that may lack audio unreported
    short_audio: Literal["warn", "error"] = "warn"  # a video whose audio is shorter than that: warn, or a fault

    def __post_init__(self) -> None:
        if self.frame_tolerance < 0:
            raise config.ConfigError(f"must be >= 0, got {self.frame_tolerance}", key="frame_tolerance")
        if not 0.0 <= self.audio_short_tolerance < 1.0:
            raise config.ConfigError(
                f"must be in [0, 1), got {self.audio_short_tolerance}", key="audio_short_tolerance"
            )


class PrepareError(ValueError):
    """One or more subjects could not be prepared; the message lists each file and what is wrong."""


class SubjectFaults(PrepareError):
    """Every fault found in one subject's files: ``faults`` holds one message per bad file."""

    def __init__(self, faults: list[str]) -> None:
        super().__init__("; ".join(faults))
        self.faults = faults


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
    skipped: list[str] = []
    for name, files in tqdm(subjects.items(), desc="prepare", unit="subject", disable=not progress):
        try:
            record, item, subject_deltas = _prepare_subject(root, name, files, videos, probes, cfg)
        except SubjectFaults as exc:
            problems.extend(exc.faults)
            skipped.append(name)
            continue
        records.append(record)
        labels[name] = item
        deltas.extend(subject_deltas)
    if bp4d_root is not None:
        for record, item in _prepare_bp4d(Path(bp4d_root), cfg, problems, skipped):
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
    short_audio = _short_audio(probes, {Path(r.video_path) for r in records if r.video_path}, cfg)
    if not records:
        raise PrepareError(f"{root}: no subject could be prepared")
    records, excluded = apply_protocol(records)
    manifest = Manifest(root=str(root), subjects=tuple(records), excluded_frames=excluded)
    report = build_report(manifest, labels, deltas, problems, cfg, videos, bp4d_root,
                          skipped_subjects=skipped, short_audio=short_audio)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_manifest(manifest, tmp / "manifest.json")
        write_labels(tmp / "labels.h5", labels)
        write_json(tmp / "report.json", report)
    log.info(
        "prepared %d subjects; the protocol excluded %d AU, %d EXPR and %d VA validation frames",
        len(records), excluded["au"], excluded["expr"], excluded["va"],
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
    """Build one Aff-Wild2 subject's record and aligned labels.

    Every file of the subject is checked (video, each annotation, the crops) before failing, so a
    :class:`SubjectFaults` lists each bad file once, not only the first.
    """
    faults: list[str] = []
    found = _video_of(name, files, videos, probes, cfg, faults)
    raw: dict[str, np.ndarray] = {}
    for task, item in files.items():
        try:
            raw[task] = read_annotation(item.path, task)
        except (ValueError, FileNotFoundError) as exc:
            faults.append(str(exc))
    if found is None:
        # Alignment and crops are checked against the video's frame count, which is unknown here.
        raise SubjectFaults(faults)
    video_path, info = found
    n = info.n_frames
    aligned, deltas = _align(name, files, raw, video_path, n, cfg, faults)
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
        va_split=files["va"].split if "va" in files else None,
        frame_delta=max((d["delta"] for d in deltas), key=abs, default=0),
    )
    try:
        face = _faces(record, crop_paths(record), cfg)
    except ValueError as exc:
        faults.append(str(exc))
    if faults:
        raise SubjectFaults(faults)
    au = aligned.get("au", np.full((n, NUM_AUS), UNLABELLED, dtype=np.int8))
    expr = aligned.get("expr", np.full(n, UNLABELLED, dtype=np.int8))
    va = aligned.get("va", unlabelled_va(n))
    item = SubjectLabels(au=au, expr=expr, face_present=face, va=va)
    return _with_counts(record, item), item, deltas


def _video_of(
    name: str,
    files: dict[str, AnnotationFile],
    videos: dict[str, list[Path]],
    probes: dict[Path, VideoInfo | Exception],
    cfg: PrepareConfig,
    faults: list[str],
) -> tuple[Path, VideoInfo] | None:
    """Find and probe subject ``name``'s video; on failure note the fault and return ``None``.

    Under ``short_audio: error`` a video whose sound is too short is a fault too (its facts are still
    returned, so the other files are checked against its frame count).
    """
    try:
        video_path = video_for(name, videos, next(iter(files.values())).path)
        info = _probe(video_path, probes, cfg)
    except (ValueError, FileNotFoundError) as exc:
        faults.append(str(exc))
        return None
    short = _audio_fault(video_path, info, cfg)
    if short and cfg.short_audio == "error":
        faults.append(short)
    return video_path, info


def _align(
    name: str,
    files: dict[str, AnnotationFile],
    raw: dict[str, np.ndarray],
    video_path: Path,
    n_frames: int,
    cfg: PrepareConfig,
    faults: list[str],
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Align each task's labels to ``n_frames``; return them and the report's pad/trim entries."""
    aligned: dict[str, np.ndarray] = {}
    deltas: list[dict[str, Any]] = []
    for task, labels in raw.items():
        path = files[task].path
        try:
            fill = np.nan if task == "va" else UNLABELLED
            aligned[task], delta = align_to_video(labels, n_frames, cfg.frame_tolerance, path, video_path, fill)
        except FrameCountError as exc:
            faults.append(str(exc))
            continue
        if delta:
            deltas.append({"subject": name, "task": task, "file": str(path), "video": str(video_path),
                           "lines": len(labels), "frames": n_frames, "delta": delta})
    return aligned, deltas


def _prepare_bp4d(
    bp4d_root: Path, cfg: PrepareConfig, problems: list[str], skipped: list[str]
) -> list[tuple[SubjectRecord, SubjectLabels]]:
    """Build a record and labels per BP4D sequence (AU training data only); note the bad ones in ``problems``."""
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
            skipped.append(bp4d.subject_name(path.stem))
            continue
        item = SubjectLabels(au=occ.au, expr=np.full(n, UNLABELLED, dtype=np.int8), face_present=face)
        out.append((_with_counts(record, item), item))
    return out


def _faces(record: SubjectRecord, paths: list[Path], cfg: PrepareConfig) -> np.ndarray:
    """Return the face-present mask of ``paths``; with ``check_crops: header`` each crop must be a JPEG.

    Every crop is checked before failing, so the error lists all unreadable crops (the first few in full).
    """
    mask = present_mask(paths)
    if not mask.any():
        log.warning("%s: no face crops found in %s", record.name, record.crops_dir)
    if cfg.check_crops == "header":
        faults = [fault for i in np.flatnonzero(mask) if (fault := _jpeg_header_fault(paths[i], int(i)))]
        if faults:
            raise ValueError(join_faults(faults, f"unreadable crops in {record.crops_dir}"))
    return mask


def _jpeg_header_fault(path: Path, frame: int) -> str | None:
    """What is wrong with the crop ``path`` of ``frame`` as a JPEG, or ``None``."""
    try:
        jpeg_size(path)  # the header only: JPEG, and no larger than a face crop may be
    except (ImageError, OSError) as exc:
        return f"{path}: frame {frame}: not a readable JPEG crop ({exc})"
    return None


def _audio_fault(video: Path, info: VideoInfo, cfg: PrepareConfig) -> str | None:
    """Say how much of ``video`` lacks audio when that share exceeds ``audio_short_tolerance``."""
    missing = info.audio_missing_share()
    if missing is None or missing <= cfg.audio_short_tolerance:
        return None
    if info.audio_start_s is None or info.audio_end_s is None:
        return f"{video}: the audio stream holds no decodable sound ({info.duration_s:.2f} s of picture)"
    return (
        f"{video}: audio covers {info.audio_start_s:.2f}..{info.audio_end_s:.2f} s of the "
        f"{info.duration_s:.2f} s picture: {missing:.0%} of the frames have no sound "
        f"(more than prepare.audio_short_tolerance = {cfg.audio_short_tolerance:g})"
    )


def _short_audio(
    probes: dict[Path, VideoInfo | Exception], used: set[Path], cfg: PrepareConfig
) -> list[dict[str, Any]]:
    """The report entries (and a warning each) of the used videos whose audio is too short."""
    out = []
    for path in sorted(used):
        info = probes.get(path)
        if not isinstance(info, VideoInfo):
            continue
        fault = _audio_fault(path, info, cfg)
        if fault is None:
            continue
        log.warning("short audio: %s", fault)
        out.append({
            "video": str(path), "video_s": round(info.duration_s, 3),
            "audio_start_s": None if info.audio_start_s is None else round(info.audio_start_s, 3),
            "audio_end_s": None if info.audio_end_s is None else round(info.audio_end_s, 3),
            "missing_share": round(float(info.audio_missing_share() or 0.0), 4),
        })
    return out


def _with_counts(record: SubjectRecord, item: SubjectLabels) -> SubjectRecord:
    """Return ``record`` with its label and face counts filled in."""
    return dataclasses.replace(
        record,
        n_au_labelled=int(_labelled(item, "au").sum()),
        n_expr_labelled=int(_labelled(item, "expr").sum()),
        n_va_labelled=int(_labelled(item, "va").sum()),
        n_faces=int(item.face_present.sum()),
    )


def build_report(
    manifest: Manifest,
    labels: dict[str, SubjectLabels],
    deltas: list[dict[str, Any]],
    problems: list[str],
    cfg: PrepareConfig,
    videos: dict[str, list[Path]],
    bp4d_root: Path | None,
    skipped_subjects: list[str] | None = None,
    short_audio: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the ``report.json`` content: counts per task and split, protocol removals, pad/trim deltas.

    Also the faults of the files left out (``skipped``, with ``skip_invalid``), the subjects left out,
    and the videos whose audio is shorter than the picture by more than the tolerance.
    """
    affwild = [r for r in manifest.subjects if r.source == "affwild2"]
    splits: dict[str, dict[str, Any]] = {}
    for task in ANNOTATED_TASKS:
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
            "excluded_subjects": {t: [r.name for r in affwild if r.split(t) == "excluded"] for t in ANNOTATED_TASKS},
            "exclusions": exclusions(manifest.subjects),
        },
        "alignment": {"tolerance": cfg.frame_tolerance, "padded_or_trimmed": deltas},
        "bp4d": {
            "subjects": len(bp4d_records),
            "frames": sum(r.n_frames for r in bp4d_records),
            "au_labelled": sum(r.n_au_labelled for r in bp4d_records),
            "faces": sum(r.n_faces for r in bp4d_records),
        },
        "skipped": problems,
        "skipped_subjects": list(skipped_subjects or []),
        "short_audio": list(short_audio or []),
    }


def _labelled(item: SubjectLabels, task: str) -> np.ndarray:
    """(N,) bool: the frames labelled for ``task`` (any AU labelled; an expression; valence and arousal)."""
    if task == "au":
        return (item.au >= 0).any(axis=1)
    if task == "expr":
        return item.expr >= 0
    assert item.va is not None  # SubjectLabels fills a missing va with NaN
    return ~np.isnan(item.va).any(axis=1)


def _labelled_with_face(item: SubjectLabels, task: str) -> int:
    return int((_labelled(item, task) & item.face_present).sum())
