"""Aff-Wild2 ``cropped_aligned`` folders for new videos: every frame's aligned 112x112 face crops, per face.

For a video ``<stem>.mp4`` the writer produces, under the output folder::

    <stem>/00001.jpg ...             one face followed in the video
    <stem>_left/..., <stem>_right/   two faces: left and right by their mean position in the frame
    .done/<stem>.json                written last: the video is complete (folders, crops per folder)

Crop ``{i+1:05d}.jpg`` is frame ``i`` (0-based, decoding order), as
:func:`pipeline.data.affwild2.crop_name` names Aff-Wild2's crops; a frame where a face is not found
has no file, as in Aff-Wild2. Frames are read as a viewer sees them (a phone clip's display matrix
applied, :func:`pipeline.data.video.decode_frames`). Faces come from :mod:`pipeline.faces.track` and are aligned by
:func:`pipeline.faces.align.align_face`, the alignment ``predict`` uses. Faces seen in fewer than
``min_frames`` frames are left out (passers-by, false detections); of more than two faces, the two
seen in the most frames are kept (Aff-Wild2 names at most two), and the others are counted in the
summary.

Nothing half-written looks complete: crops are written to a temporary folder named with the
writer's pid, the finished folders are renamed into place, and ``.done/<stem>.json`` is written
last; ``.done/<stem>.pending`` lists the folders while they are being moved, so an interrupted run
is redone and its folders replaced by the next one. A folder with a video's name that this writer
did not make is never overwritten. A video whose ``.done`` record exists is skipped (resumable).

Example (not run here: a few seconds of detection)::

    summary = crop_video("clips/talk.mp4", "data/cropped_aligned")
    # CropSummary(video='clips/talk.mp4', frames=250, folders={'talk': 243}, dropped=0, skipped=False, ...)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from pipeline.data.affwild2 import VIDEO_EXTENSIONS, crop_name, find_videos
from pipeline.data.media_open import MediaLimits
from pipeline.data.video import decode_frames
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.track import FaceTracker, TrackerConfig
from pipeline.fsio import make_temporary_dir, remove_dead_temporaries, write_json
from pipeline.video_batch import check_unique_stems, for_each_video

log = logging.getLogger(__name__)

DONE_DIR = ".done"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class CropSummary:
    """What cropping one video produced."""

    video: str
    frames: int
    folders: dict[str, int] = field(default_factory=dict)   # folder name -> crops written
    dropped: int = 0          # faces left out: seen in too few frames, or beyond the two kept
    skipped: bool = False     # complete from an earlier run, not cropped again
    seconds: float = 0.0


def videos_in(path: str | Path) -> list[Path]:
    """``path`` itself when it is a video file, else the .mp4/.avi files under it (sorted; stems must differ)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no video or folder at {path}")
    found = find_videos(path)
    for stem, paths in found.items():
        if len(paths) > 1:
            raise ValueError(f"{path}: several videos have the stem {stem!r}: {', '.join(map(str, paths))}")
    if not found:
        raise FileNotFoundError(f"{path}: no {'/'.join(VIDEO_EXTENSIONS)} videos in this folder")
    return [paths[0] for _, paths in sorted(found.items())]


def crop_video(
    video: str | Path,
    out_root: str | Path,
    detector: DetectorConfig = DetectorConfig(),
    tracking: TrackerConfig = TrackerConfig(),
    min_frames: int = 10,
    limits: MediaLimits = MediaLimits(),
) -> CropSummary:
    """Write the aligned crops of every face of ``video`` under ``out_root`` (see the module doc)."""
    start = time.perf_counter()
    video, out_root = Path(video), Path(out_root)
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    stem = video.stem
    done = out_root / DONE_DIR / f"{stem}.json"
    if done.is_file():
        record = json.loads(done.read_text())
        log.info("%s: already cropped (%s), skipped", video, done)
        return CropSummary(str(video), record["frames"], record["folders"], record["dropped"], skipped=True)
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    _undo_interrupted(out_root, stem)
    out_root.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out_root, f".{stem}.tmp-")
    staging = make_temporary_dir(out_root, f".{stem}.tmp-")
    try:
        frames, counts, centres = _write_crops(video, staging, detector, tracking, limits)
        folders, dropped = _names(stem, counts, centres, min_frames)
        for name in folders:
            if (out_root / name).exists():
                raise FileExistsError(f"{out_root / name}: exists and was not written by crop for {video}; "
                                      f"move it away or crop into another folder")
        pending = out_root / DONE_DIR / f"{stem}.pending"
        write_json(pending, sorted(folders))
        for name, face_id in folders.items():
            os.replace(staging / f"face{face_id}", out_root / name)
        summary = CropSummary(str(video), frames, {name: counts[face_id] for name, face_id in folders.items()},
                              dropped, seconds=round(time.perf_counter() - start, 3))
        write_json(done, {"video": str(video), "frames": frames, "folders": summary.folders, "dropped": dropped})
        pending.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: %d frames, crops %s (%d faces left out) in %.1f s", video, frames, summary.folders, dropped,
             summary.seconds)
    return summary


def crop_videos(
    videos: Sequence[str | Path],
    out_root: str | Path,
    detector: DetectorConfig = DetectorConfig(),
    tracking: TrackerConfig = TrackerConfig(),
    min_frames: int = 10,
    limits: MediaLimits = MediaLimits(),
) -> tuple[list[CropSummary], dict[str, str]]:
    """Crop every video; one that fails is reported (``{video: message}``) while the others complete."""
    check_unique_stems(videos, "{stem}/")
    return for_each_video(videos, lambda video: crop_video(video, out_root, detector, tracking, min_frames, limits))


def _write_crops(video: Path, staging: Path, detector: DetectorConfig, tracking: TrackerConfig,
                 limits: MediaLimits) -> tuple[int, dict[int, int], dict[int, float]]:
    """Decode, track and write each face's crops to ``staging/face<id>/``; frames, crops and mean x per face."""
    tracker = FaceTracker(tracking, FaceDetector(detector))
    counts: dict[int, int] = {}
    x_sums: dict[int, float] = {}
    frames = 0
    for i, (_, _, image) in enumerate(decode_frames(video, limits=limits)):
        frames = i + 1
        for face in tracker.update(image):
            folder = staging / f"face{face.face_id}"
            if face.face_id not in counts:
                folder.mkdir()
            Image.fromarray(face.crop).save(folder / crop_name(i), quality=JPEG_QUALITY)
            counts[face.face_id] = counts.get(face.face_id, 0) + 1
            x_sums[face.face_id] = x_sums.get(face.face_id, 0.0) + face.box.centre[0]
    return frames, counts, {face_id: x_sums[face_id] / counts[face_id] for face_id in counts}


def _names(stem: str, counts: dict[int, int], centres: dict[int, float],
           min_frames: int) -> tuple[dict[str, int], int]:
    """Folder name -> face id of the faces kept, and how many faces were left out."""
    kept = sorted((face_id for face_id in counts if counts[face_id] >= min_frames),
                  key=lambda face_id: (-counts[face_id], face_id))[:2]
    dropped = len(counts) - len(kept)
    if len(kept) == 1:
        return {stem: kept[0]}, dropped
    if len(kept) == 2:
        left, right = sorted(kept, key=lambda face_id: centres[face_id])
        return {f"{stem}_left": left, f"{stem}_right": right}, dropped
    return {}, dropped


def _undo_interrupted(out_root: Path, stem: str) -> None:
    """Remove the folders an interrupted run of this video had started to move into place.

    The pending file is read as data, not trusted: it may only name the folders crop writes for this
    video (``<stem>``, ``<stem>_left``, ``<stem>_right``), directly under ``out_root``; anything else
    is a ``ValueError`` and nothing is removed.
    """
    pending = out_root / DONE_DIR / f"{stem}.pending"
    if not pending.is_file():
        return
    allowed = {stem, f"{stem}_left", f"{stem}_right"}
    try:
        names = json.loads(pending.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{pending}: not a list of folder names ({exc}); remove it and rerun") from None
    if not isinstance(names, list) or not all(isinstance(name, str) and name in allowed for name in names):
        raise ValueError(f"{pending}: names folders crop does not write for {stem!r} "
                         f"(only {sorted(allowed)}): {names!r}; remove it and rerun")
    for name in names:
        folder = out_root / name
        log.info("%s: removing %s, left by an interrupted run", pending, folder)
        if folder.is_symlink():  # remove the link, never what it points at
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)
    pending.unlink()
