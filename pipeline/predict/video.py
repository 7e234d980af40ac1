"""Per-frame AU and expression probabilities for new videos, from the exported ONNX models.

For each video:

1. frames are decoded with PyAV (frame ``i`` in decoding order, its timestamp from the frame's pts);
2. the face of frame ``i`` is ``{i+1:05d}.jpg`` of a given crops folder (Aff-Wild2 ``cropped_aligned``
   style), or found and followed by :mod:`pipeline.faces.track` (dlib detection, five landmarks) and
   aligned to the arcface 112x112 template (:mod:`pipeline.faces.align`); when several faces are
   followed, the CSV is of the face seen in the most frames;
3. ``visual.onnx`` embeds the faces (frames without a face get a zero embedding, as in the cache);
4. when the sequence model uses audio, each frame's log-mel window (:mod:`pipeline.audio.windows`,
   with the audio config stored in ``tdnn.onnx``) goes through ``tdnn.onnx``;
5. ``sequence.onnx`` runs over the whole video with overlapping windows (modalities, window and
   stride from its metadata), exactly as ``evaluate`` runs it on the cache: embeddings pass through
   float16 like the cached ones, and the same :class:`~pipeline.inference.sequence.SequenceRunner`
   builds the input and averages the windows.

The three models are loaded and run by :mod:`pipeline.inference`, as in ``embed-visual``,
``embed-audio`` and ``evaluate``.

The CSV (written atomically) has one row per decoded frame::

    frame,timestamp,AU1,...,AU26,Neutral,...,Surprise,expression,face_present,audio_present,low_confidence
    0,0.0000,0.1234,...,0.0456,0.6012,...,0.0101,Neutral,1,1,0

AU columns are sigmoid probabilities, expression columns softmax probabilities (they sum to 1),
``expression`` the most probable class, ``face_present`` and ``audio_present`` 1/0 (audio: the
frame's audio window was covered by the track and the model uses audio). Every frame is predicted,
also frames without a face (then from the audio and the neighbouring frames); ``low_confidence``
is 1 on frames with neither a face nor audio, whose prediction comes from neighbouring frames alone.

A still image (JPEG, PNG, ... opened as a one-frame "video") is refused with a
:class:`~pipeline.data.video.VideoError` naming it: the models read a face over time, and
:func:`pipeline.predict.photo_video.write_photo_video` turns a photograph into a video when that is
what is wanted.

Example (not run here: it needs the exported models; tests/unit/test_predict.py runs it on tiny ones)::

    models = load_models("cache/onnx/visual.onnx", "cache/audio/tdnn.onnx",
                         "cache/sequence/sequence.onnx", device="cpu")
    predict_video("clip.mp4", "out/clip.csv", models=models)
    # PredictSummary(video='clip.mp4', csv='out/clip.csv', frames=250, faces=243, audio_frames=250,
    #                low_confidence=0, seconds=4.1)
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pipeline.audio.windows import video_audio
from pipeline.data.video import decode_frames
from pipeline.faces.align import CROP_SIZE
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.track import FaceTracker, TrackerConfig
from pipeline.fsio import atomic_path
from pipeline.inference.audio import AudioEmbedder
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.inference.visual import VisualEmbedder
from pipeline.labels import AU_NAMES, EMBEDDING_DIM, EXPR_NAMES
from pipeline.models.preprocess import to_model_input
from pipeline.video_batch import check_unique_stems, for_each_video

log = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = (
    "frame", "timestamp", *AU_NAMES, *EXPR_NAMES, "expression", "face_present", "audio_present", "low_confidence",
)



@dataclass(frozen=True)
class PredictConfig:
    """Face detection and following for raw videos (the ``predict`` params section, also read by ``crop``)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass(frozen=True)
class PredictModels:
    """The three loaded models (the sequence runner knows its modalities, window and stride)."""

    visual: VisualEmbedder
    audio: AudioEmbedder | None     # None when the sequence model does not use audio
    sequence: SequenceRunner


@dataclass(frozen=True)
class PredictSummary:
    """What one video's prediction produced."""

    video: str
    csv: str
    frames: int
    faces: int
    audio_frames: int
    low_confidence: int     # frames with neither a face nor audio
    seconds: float


def load_models(visual_onnx: str | Path, audio_onnx: str | Path | None, sequence_onnx: str | Path,
                device: str = "auto", threads: int = 0) -> PredictModels:
    """Open the ONNX models once; ``tdnn.onnx`` is needed only when the sequence model uses audio."""
    sequence = load_sequence_runner(sequence_onnx, device, threads)
    audio = None
    if sequence.uses_audio():
        if audio_onnx is None:
            raise ValueError(f"{sequence_onnx}: the sequence model uses audio ({sequence.modalities!r}); "
                             f"give tdnn.onnx")
        audio = AudioEmbedder.from_file(audio_onnx, device, threads)
    return PredictModels(VisualEmbedder.from_onnx(visual_onnx, device, threads), audio, sequence)


def predict_video(
    video_path: str | Path,
    out_csv: str | Path,
    visual_onnx: str | Path | None = None,
    audio_onnx: str | Path | None = None,
    sequence_onnx: str | Path | None = None,
    crops_dir: str | Path | None = None,
    device: str = "auto",
    config: PredictConfig = PredictConfig(),
    batch_size: int = 64,
    models: PredictModels | None = None,
) -> PredictSummary:
    """Write the per-frame CSV of one video; pass ``models`` to reuse loaded sessions across videos."""
    start = time.perf_counter()
    video_path, out_csv = Path(video_path), Path(out_csv)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if models is None:
        if visual_onnx is None or sequence_onnx is None:
            raise ValueError("give visual_onnx and sequence_onnx (and audio_onnx for audio), or loaded models")
        models = load_models(visual_onnx, audio_onnx, sequence_onnx, device)
    if not video_path.is_file():
        raise FileNotFoundError(f"video not found: {video_path}")
    if crops_dir is not None and not Path(crops_dir).is_dir():
        raise FileNotFoundError(f"{video_path}: crops folder not found: {crops_dir}")
    frames = _visual_pass(video_path, models, config, crops_dir, batch_size)
    n = len(frames.timestamps)
    audio_embedding = np.zeros((n, EMBEDDING_DIM), np.float16)
    audio_present = np.zeros(n, bool)
    if models.audio is not None:
        audio = video_audio(video_path, n, frames.fps, models.audio.audio_config)
        audio_embedding, audio_present = models.audio.embed(audio, batch_size).astype(np.float16), audio.present
    au_logits, expr_logits = models.sequence.video_logits(
        frames.embedding, audio_embedding, frames.face_present, audio_present, batch_size
    )
    write_csv(out_csv, frames.timestamps, _sigmoid(au_logits), _softmax(expr_logits), frames.face_present,
              audio_present)
    summary = PredictSummary(str(video_path), str(out_csv), n, int(frames.face_present.sum()),
                             int(audio_present.sum()), int((~frames.face_present & ~audio_present).sum()),
                             round(time.perf_counter() - start, 3))
    log.info("%s: %d frames (%d with a face, %d with audio, %d low-confidence) -> %s in %.1f s", video_path, n,
             summary.faces, summary.audio_frames, summary.low_confidence, out_csv, summary.seconds)
    return summary


def predict_videos(
    videos: Sequence[str | Path],
    out_dir: str | Path,
    models: PredictModels,
    crops_root: str | Path | None = None,
    config: PredictConfig = PredictConfig(),
    batch_size: int = 64,
) -> tuple[list[PredictSummary], dict[str, str]]:
    """Predict every video into ``out_dir/<stem>.csv``; a failing video is reported, the others still run.

    Returns the summaries of the videos that succeeded and ``{video: error message}`` of the others.
    Crops of video ``<stem>`` are read from ``crops_root/<stem>/`` (``cropped_aligned`` layout), or
    from ``crops_root`` itself when it holds the crops of a single given video.
    """
    check_unique_stems(videos, "{stem}.csv")

    def predict_one(video: Path) -> PredictSummary:
        crops = crops_for(video, crops_root, single=len(videos) == 1)
        return predict_video(video, Path(out_dir) / f"{video.stem}.csv", crops_dir=crops, config=config,
                             batch_size=batch_size, models=models)

    return for_each_video(videos, predict_one)


def crops_for(video: Path, crops_root: str | Path | None, single: bool) -> Path | None:
    """The crops folder of ``video``: ``crops_root/<stem>/``, or ``crops_root`` for a single video."""
    if crops_root is None:
        return None
    root = Path(crops_root)
    if (root / video.stem).is_dir():
        return root / video.stem
    if single and root.is_dir() and any(root.glob("*.jpg")):
        return root
    raise FileNotFoundError(f"{video}: no crops folder {root / video.stem}")


@dataclass(frozen=True)
class _VisualPass:
    timestamps: np.ndarray    # (N,) float64 seconds
    embedding: np.ndarray     # (N, 512) float16, zeros where no face
    face_present: np.ndarray  # (N,) bool
    fps: float


def _visual_pass(video_path: Path, models: PredictModels, config: PredictConfig, crops_dir: str | Path | None,
                 batch_size: int) -> _VisualPass:
    """Decode the video once, find each frame's faces and embed them in batches.

    Every followed face is embedded (512 float16 values per face and frame are small); the face seen
    in the most frames (the lowest id on a tie) is the one the CSV describes.
    """
    tracker = None if crops_dir is not None else FaceTracker(config.tracking, FaceDetector(config.detector))
    timestamps: list[float] = []
    frames_of: dict[int, list[int]] = {}        # face id -> frame indices
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            images = to_model_input(np.stack(batch)).numpy()
            chunks.append(models.visual(images)["embedding"].astype(np.float16))
            batch.clear()

    owners: list[int] = []     # face id of each embedded crop, in order
    fps = 0.0
    for i, (timestamp, fps, image) in enumerate(decode_frames(video_path, need_pixels=tracker is not None)):
        timestamps.append(timestamp)
        if tracker is not None:
            crops = [(face.face_id, face.crop) for face in tracker.update(image)]
        else:
            crop = _crop_from_folder(Path(crops_dir), i)
            crops = [] if crop is None else [(0, crop)]
        for face_id, crop in crops:
            frames_of.setdefault(face_id, []).append(i)
            owners.append(face_id)
            batch.append(crop)
            if len(batch) == batch_size:
                flush()
    flush()
    n = len(timestamps)
    face_present = np.zeros(n, bool)
    embedding = np.zeros((n, EMBEDDING_DIM), np.float16)
    if chunks:
        main = max(frames_of, key=lambda face_id: (len(frames_of[face_id]), -face_id))
        if len(frames_of) > 1:
            log.info("%s: %d faces followed; the CSV describes face %d, seen in %d of %d frames", video_path,
                     len(frames_of), main, len(frames_of[main]), n)
        mine = np.asarray(owners) == main
        face_present[frames_of[main]] = True
        embedding[face_present] = np.concatenate(chunks)[mine]
    return _VisualPass(np.asarray(timestamps, np.float64), embedding, face_present, fps)


def _crop_from_folder(folder: Path, index: int) -> np.ndarray | None:
    path = folder / f"{index + 1:05d}.jpg"
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (CROP_SIZE, CROP_SIZE):
                image = image.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: unreadable face crop ({exc})") from exc


def write_csv(path: str | Path, timestamps: np.ndarray, au_prob: np.ndarray, expr_prob: np.ndarray,
              face_present: np.ndarray, audio_present: np.ndarray) -> Path:
    """Write the per-frame CSV (columns :data:`CSV_COLUMNS`) atomically; frames with neither face nor
    audio are marked ``low_confidence``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            best = expr_prob.argmax(axis=1)
            for i in range(len(timestamps)):
                writer.writerow([
                    i, f"{timestamps[i]:.4f}", *(f"{p:.4f}" for p in au_prob[i]), *(f"{p:.4f}" for p in expr_prob[i]),
                    EXPR_NAMES[best[i]], int(face_present[i]), int(audio_present[i]),
                    int(not face_present[i] and not audio_present[i]),
                ])
    return path


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
