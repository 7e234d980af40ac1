"""Per-frame AU and expression probabilities for new videos, from the exported ONNX models.

For each video:

1. frames are decoded with PyAV (frame ``i`` in decoding order, its timestamp from the frame's pts);
2. the face of frame ``i`` is ``{i+1:05d}.jpg`` of a given crops folder (Aff-Wild2 ``cropped_aligned``
   style), or found by the offline detector (:mod:`pipeline.predict.faces`) and cropped to 112x112
   around its box (:mod:`pipeline.predict.align`);
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
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from pipeline.audio.windows import video_audio
from pipeline.config import ConfigError
from pipeline.data.video import VideoError, video_stream
from pipeline.fsio import atomic_path
from pipeline.inference.audio import AudioEmbedder
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.inference.visual import VisualEmbedder
from pipeline.labels import AU_NAMES, EMBEDDING_DIM, EXPR_NAMES
from pipeline.models.preprocess import to_model_input
from pipeline.predict.align import CROP_SIZE, crop_face
from pipeline.predict.faces import DetectorConfig, FaceTracker

log = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = (
    "frame", "timestamp", *AU_NAMES, *EXPR_NAMES, "expression", "face_present", "audio_present", "low_confidence",
)



@dataclass(frozen=True)
class PredictConfig:
    """Face finding and cropping for raw videos (the ``predict`` params section)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    crop_margin: float = 0.15      # the face box grows by this fraction of its side on every side

    def __post_init__(self) -> None:
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.crop_margin}", key="crop_margin")


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
    stems: dict[str, str] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in stems:
            raise ValueError(f"videos {stems[stem]} and {video} would both write {stem}.csv; predict them separately")
        stems[stem] = str(video)
    done, failed = [], {}
    for video in videos:
        video = Path(video)
        try:
            crops = crops_for(video, crops_root, single=len(videos) == 1)
            done.append(predict_video(video, Path(out_dir) / f"{video.stem}.csv", crops_dir=crops,
                                      config=config, batch_size=batch_size, models=models))
        except (ValueError, FileNotFoundError, OSError, av.FFmpegError) as exc:
            message = str(exc) if str(video) in str(exc) else f"{video}: {exc}"
            log.error("%s", message)
            failed[str(video)] = message
    return done, failed


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
    """Decode the video once, find each frame's face and embed the faces in batches."""
    tracker = None if crops_dir is not None else FaceTracker(config.detector)
    timestamps, present, chunks = [], [], []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            images = to_model_input(np.stack(batch)).numpy()
            chunks.append(models.visual(images)["embedding"].astype(np.float16))
            batch.clear()

    fps = 0.0
    for i, (timestamp, fps, image) in enumerate(_decode(video_path, need_pixels=tracker is not None)):
        timestamps.append(timestamp)
        crop = _crop_from_folder(Path(crops_dir), i) if crops_dir is not None else None
        if tracker is not None:
            box = tracker.update(image)
            crop = None if box is None else crop_face(image, box, margin=config.crop_margin)
        present.append(crop is not None)
        if crop is not None:
            batch.append(crop)
            if len(batch) == batch_size:
                flush()
    flush()
    face_present = np.asarray(present, bool)
    embedding = np.zeros((len(present), EMBEDDING_DIM), np.float16)
    if chunks:
        embedding[face_present] = np.concatenate(chunks)
    return _VisualPass(np.asarray(timestamps, np.float64), embedding, face_present, fps)


def _decode(video_path: Path, need_pixels: bool) -> Iterator[tuple[float, float, np.ndarray | None]]:
    """Yield ``(timestamp s, fps, RGB frame or None)`` for every decoded frame."""
    try:
        with av.open(str(video_path)) as container:
            if is_still_image(container):
                raise VideoError(
                    f"{video_path}: a still image ({container.format.name}), not a video; predict reads videos "
                    f"(make one from a photograph with pipeline.predict.photo_video.write_photo_video)"
                )
            stream, fps = video_stream(video_path, container)
            first: float | None = None
            count = 0
            for count, frame in enumerate(container.decode(stream), start=1):
                t = frame.time if frame.time is not None else (count - 1) / fps
                first = t if first is None else first
                image = frame.to_ndarray(format="rgb24") if need_pixels else None
                yield t - first, fps, image
            if count == 0:
                raise VideoError(f"{video_path}: the video stream holds no frames")
    except av.FFmpegError as exc:
        raise VideoError(f"{video_path}: cannot decode video ({exc})") from exc


def is_still_image(container: av.container.InputContainer) -> bool:
    """Whether PyAV opened a picture file (JPEG, PNG, BMP, TIFF, WebP, a one-frame GIF) rather than a video."""
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):   # FFmpeg's single-picture demuxers
        return True
    return name == "gif" and all((s.frames or 0) <= 1 for s in container.streams.video)


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
