"""Per-frame AU and expression probabilities and valence-arousal for new videos, from the exported ONNX models.

For each video:

1. frames are decoded with PyAV (frame ``i`` in decoding order, its timestamp from the frame's pts), as a
   viewer sees them (a display matrix applied: :func:`pipeline.data.video.decode_frames`), so boxes and
   landmarks are in display orientation; a video beyond ``PredictConfig.limits`` is refused by name;
2. the faces of frame ``i`` are ``{i+1:05d}.jpg`` of a given crops folder (Aff-Wild2 ``cropped_aligned``
   style; one face, id 0, place unknown), or every face is found and followed with a stable id by
   :mod:`pipeline.faces.track` (dlib detection, five landmarks) and aligned to the arcface 112x112
   template (:mod:`pipeline.faces.align`);
3. ``visual.onnx`` embeds every face's crops;
4. when the sequence model uses audio, each frame's log-mel window (:mod:`pipeline.audio.windows`,
   with the audio config stored in ``tdnn.onnx``) goes through ``tdnn.onnx`` (once: the soundtrack is
   shared by all faces);
5. ``sequence.onnx`` runs once per face id over the whole video with overlapping windows (modalities,
   window and stride from its metadata), exactly as ``evaluate`` runs it on the cache: that face's
   embeddings on the frames it was followed in, a zero embedding flagged "no face" elsewhere, the
   shared audio; embeddings pass through float16 like the cached ones, and the same
   :class:`~pipeline.inference.sequence.SequenceRunner` builds the input and averages the windows;
   with ``low_latency``, the causal mode (:mod:`pipeline.inference.causal`) instead predicts frame ``t``
   from frames ``<= t`` only.

The three models are loaded and run by :mod:`pipeline.inference`, as in ``embed-visual``,
``embed-audio`` and ``evaluate``.

The CSV (written to a temporary and published by a rename, so a ``<stem>.csv`` that exists is
complete) has one row per frame per face, ordered by frame then face id::

    frame,timestamp,face_id,confidence,x,y,w,h,lm0_x,lm0_y,...,lm4_x,lm4_y,AU1,...,AU26,AU1_active,...,AU26_active,
        Neutral,...,Surprise,expression,valence,arousal,face_present,audio_present,low_confidence
    0,0.0000,0,1.2345,180.20,60.75,120.00,120.00,210.31,105.12,...,0.1234,...,0.0456,0,...,0,0.6012,...,0.0101,Neutral,0.213,-0.087,1,1,0

``confidence`` is the detector's score of the face's latest detection, ``x, y, w, h`` its box and
``lmK_x, lmK_y`` its five landmarks (insightface order: left eye, right eye, nose tip, left and right
mouth corner), all in frame pixels; they are empty for faces read from a crops folder. AU columns
are sigmoid probabilities, ``<AU>_active`` 1 where the probability exceeds that AU's threshold in
``sequence.onnx`` (chosen on held-out data by ``train-sequence``, :mod:`pipeline.au_thresholds`; 0.5
for a model file without thresholds; :func:`load_models` logs which), expression columns softmax
probabilities (they sum to 1), ``expression``
the most probable class, ``valence`` and ``arousal`` the sequence model's ``va_pred`` (in [-1, 1], 3
decimals; empty only for a row made without them), ``face_present`` and ``audio_present`` 1/0
(audio: the frame's audio window was covered by the track and the model uses audio). Every frame
appears: a frame where no face was followed has one row with the face fields (``face_id`` included) empty and ``face_present`` 0,
predicted as the sequence model predicts a frame without a face (from the most-seen face's run:
its neighbouring frames and the audio; from the audio alone in a video without any face);
``low_confidence`` is 1 on such frames without audio either, whose prediction comes from
neighbouring frames alone.

Besides the CSV, on request: the video with every face's predictions drawn on it
(:mod:`pipeline.predict.overlay`, a second decoding pass once the predictions exist), a PNG
timeline per face id next to the CSV (:mod:`pipeline.predict.timelines`), and a callback told the
frames done of each pass (:mod:`pipeline.predict.pass_progress`).

A model file exported before the models predicted valence-arousal (no ``va_pred`` output in
``visual.onnx`` or ``sequence.onnx``) is refused when loaded, by :func:`check_va_output`, with one
line naming the file and saying to export it again.

A still image (JPEG, PNG, ... opened as a one-frame "video") is refused with a
:class:`~pipeline.data.video.VideoError` naming it: the models read a face over time, and
:func:`pipeline.data.synth.photo_video.write_photo_video` turns a photograph into a video when that is
what is wanted.

Example (not run here: it needs the exported models; tests/unit/predict/test_predict.py runs it on tiny ones)::

    models = load_models("cache/onnx/visual.onnx", "cache/audio/tdnn.onnx",
                         "cache/sequence/sequence.onnx", device="cpu")
    predict_video("clip.mp4", "out/clip.csv", models=models)
    # PredictSummary(video='clip.mp4', csv='out/clip.csv', frames=250, faces=243, audio_frames=250,
    #                low_confidence=0, seconds=4.1, face_ids=1, skipped=False)
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.au_thresholds import AuThresholds, fixed_thresholds
from pipeline.audio.windows import causal_audio_delay, video_audio
from pipeline.data.media_open import MediaLimits
from pipeline.data.video import decode_frames
from pipeline.error_words import error_words
from pipeline.faces.align import CROP_SIZE
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.track import FaceTracker, TrackerConfig
from pipeline.fsio import atomic_path
from pipeline.inference.audio import AudioEmbedder
from pipeline.inference.causal import causal_logits
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.inference.visual import VisualEmbedder
from pipeline.jpeg import ImageError, read_jpeg
from pipeline.labels import AU_NAMES, EMBEDDING_DIM, EXPR_NAMES, VA_NAMES
from pipeline.model_files import audio as audio_files
from pipeline.model_files import visual as visual_files
from pipeline.model_files.precision import DEFAULT_PRECISION
from pipeline.models.preprocess import to_model_input
from pipeline.predict.overlay import write_overlay
from pipeline.predict.pass_progress import ProgressCallback, expected_frames, progress_reporter
from pipeline.predict.timelines import timeline_path, write_timelines
from pipeline.video_batch import check_unique_stems, for_each_video

log = logging.getLogger(__name__)

# the precisions predict runs at: those of which both the visual model and the TDNN have a copy
PRECISIONS: tuple[str, ...] = tuple(p for p in visual_files.PRECISIONS if p in audio_files.PRECISIONS)

# the five landmarks in insightface order (pipeline.faces.align.ARCFACE_TEMPLATE): left eye, right eye,
# nose tip, left mouth corner, right mouth corner
LANDMARK_COLUMNS: tuple[str, ...] = tuple(f"lm{k}_{axis}" for k in range(5) for axis in ("x", "y"))
FACE_COLUMNS: tuple[str, ...] = ("face_id", "confidence", "x", "y", "w", "h", *LANDMARK_COLUMNS)
CSV_COLUMNS: tuple[str, ...] = (
    "frame", "timestamp", *FACE_COLUMNS, *AU_NAMES, *(f"{name}_active" for name in AU_NAMES), *EXPR_NAMES,
    "expression", *VA_NAMES, "face_present", "audio_present", "low_confidence",
)
# SequenceRunner.video_logits or the causal mode: (visual, audio, face_present, audio_present, batch_size)
# -> (au_logits, expr_logits, va_pred)
SequenceLogits = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
# the ONNX output every model predict runs must have (docs/architecture.md, the valence-arousal contract)
VA_OUTPUT = "va_pred"



@dataclass(frozen=True)
class PredictConfig:
    """Face detection and following for raw videos, and the bounds on what a video may hold (the ``predict``
    params section, also read by ``crop``)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackerConfig = field(default_factory=TrackerConfig)
    limits: MediaLimits = field(default_factory=MediaLimits)


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
    faces: int              # frames with at least one face
    audio_frames: int
    low_confidence: int     # frames with neither a face nor audio
    seconds: float
    face_ids: int = 0       # faces followed (distinct face ids)
    skipped: bool = False   # True when the CSV was already complete and the video was not run again


def load_models(visual_onnx: str | Path, audio_onnx: str | Path | None, sequence_onnx: str | Path,
                device: str = "auto", threads: int = 0, precision: str = DEFAULT_PRECISION) -> PredictModels:
    """Open the ONNX models once; ``tdnn.onnx`` is needed only when the sequence model uses audio.

    ``precision`` picks the copies of ``visual.onnx`` and ``tdnn.onnx`` that run (e.g. their
    ``.int8.onnx`` beside them, :data:`PRECISIONS`); the sequence model runs in float32. An ONNX
    visual or sequence model without the ``va_pred`` output (exported before the models predicted
    valence-arousal) is refused (:func:`check_va_output`).
    """
    check_va_output(sequence_onnx, "train-sequence")
    sequence = load_sequence_runner(sequence_onnx, device, threads)
    log.info("AU decisions (<AU>_active) at the thresholds of %s: %s", sequence_onnx, sequence.au_thresholds.describe())
    audio = None
    if sequence.uses_audio():
        if audio_onnx is None:
            raise ValueError(f"{sequence_onnx}: the sequence model uses audio ({sequence.modalities!r}); "
                             f"give tdnn.onnx")
        audio = AudioEmbedder.from_file(audio_files.onnx_model(audio_onnx, precision), device, threads)
    visual_file = visual_files.onnx_model(visual_onnx, precision)
    check_va_output(visual_file, "finetune-visual, or export-onnx")
    visual = VisualEmbedder.from_onnx(visual_file, device, threads)
    return PredictModels(visual, audio, sequence)


def check_va_output(path: str | Path, stage: str) -> None:
    """Refuse an ONNX model file without the ``va_pred`` output, naming the file and ``stage``, which
    writes it again; a torch checkpoint (any other suffix) is left to its own loader.

    Such a file predates valence-arousal: it has no VA to write, and running it would fail inside
    onnxruntime with a message that names neither the file nor the remedy.
    """
    path = Path(path)
    if path.suffix != ".onnx" or not path.is_file():
        return      # a missing file is reported by the loader that opens it
    import onnx
    from google.protobuf.message import DecodeError

    try:   # only the graph's signature is read, not the weights an external-data file holds
        outputs = [value.name for value in onnx.load(str(path), load_external_data=False).graph.output]
    except (DecodeError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if VA_OUTPUT not in outputs:
        raise ValueError(f"{path}: no {VA_OUTPUT} output (outputs {', '.join(outputs)}): the model predates "
                         f"valence-arousal; export it again ({stage})")


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
    overlay: str | Path | None = None,
    timelines: bool = False,
    progress: ProgressCallback | None = None,
    low_latency: bool = False,
    causal_audio: bool = False,
) -> PredictSummary:
    """Write the per-frame CSV of one video; pass ``models`` to reuse loaded sessions across videos.

    ``overlay``: also write the video with the predictions drawn there (:mod:`pipeline.predict.overlay`);
    ``timelines``: also write ``<stem>_face<id>.png`` next to the CSV (:mod:`pipeline.predict.timelines`);
    ``progress`` is called after every frame of each pass (:mod:`pipeline.predict.pass_progress`). The CSV
    is written first, then the timelines, then the overlay.
    ``low_latency``: the sequence model's causal mode, frame ``t`` predicted from frames ``<= t``
    (:func:`pipeline.inference.causal.causal_logits`), with the audio window centred on ``t`` (a
    look-ahead of :func:`~pipeline.audio.windows.audio_lookahead_s`), or, with ``causal_audio``,
    the audio delayed so that no frame reads audio after its time.
    """
    start = time.perf_counter()
    video_path, out_csv = Path(video_path), Path(out_csv)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if causal_audio and not low_latency:
        raise ValueError("causal_audio is an option of the low-latency mode; set low_latency too")
    if models is None:
        if visual_onnx is None or sequence_onnx is None:
            raise ValueError("give visual_onnx and sequence_onnx (and audio_onnx for audio), or loaded models")
        models = load_models(visual_onnx, audio_onnx, sequence_onnx, device)
    if not video_path.is_file():
        raise FileNotFoundError(f"video not found: {video_path}")
    if crops_dir is not None and not Path(crops_dir).is_dir():
        raise FileNotFoundError(f"{video_path}: crops folder not found: {crops_dir}")
    frame_done = progress_reporter(progress, video_path, "faces", expected_frames(video_path) if progress else 0)
    frames = _visual_pass(video_path, models, config, crops_dir, batch_size, frame_done)
    n = len(frames.timestamps)
    audio_embedding = np.zeros((n, EMBEDDING_DIM), np.float16)
    audio_present = np.zeros(n, bool)
    if models.audio is not None:
        audio = video_audio(video_path, n, frames.fps, models.audio.audio_config, limits=config.limits)
        audio_embedding, audio_present = models.audio.embed(audio, batch_size).astype(np.float16), audio.present
    logits = models.sequence.video_logits
    if low_latency:
        delay = causal_audio_delay(models.audio.audio_config, frames.fps) if causal_audio and models.audio else 0
        logits = partial(causal_logits, models.sequence, audio_delay=delay)
    predictions, any_face = _predict_faces(frames, logits, audio_embedding, audio_present, batch_size,
                                           causal=low_latency)
    write_csv(out_csv, frames.timestamps, audio_present, predictions, models.sequence.au_thresholds)
    if timelines:
        write_timelines(out_csv.parent, video_path.stem, predictions, n, frames.fps)
    if overlay is not None:
        write_overlay(video_path, overlay, predictions, progress, config.limits, models.sequence.au_thresholds)
    summary = PredictSummary(str(video_path), str(out_csv), n, int(any_face.sum()),
                             int(audio_present.sum()), int((~any_face & ~audio_present).sum()),
                             round(time.perf_counter() - start, 3), face_ids=len(frames.faces))
    log.info("%s: %d frames (%d with a face, %d faces followed, %d with audio, %d low-confidence) -> %s in %.1f s",
             video_path, n, summary.faces, summary.face_ids, summary.audio_frames, summary.low_confidence, out_csv,
             summary.seconds)
    return summary


def predict_videos(
    videos: Sequence[str | Path],
    out_dir: str | Path,
    models: PredictModels,
    crops_root: str | Path | None = None,
    config: PredictConfig = PredictConfig(),
    batch_size: int = 64,
    skip_complete: bool = True,
    overlay: str | Path | None = None,
    timelines: bool = False,
    progress: ProgressCallback | None = None,
    low_latency: bool = False,
    causal_audio: bool = False,
) -> tuple[list[PredictSummary], dict[str, str]]:
    """Predict every video into ``out_dir/<stem>.csv``; a failing video is reported, the others still run.

    ``overlay`` is where the videos with their predictions drawn go (:func:`overlay_path_for`: a file
    for a single video, else a folder receiving ``<stem>.mp4``); ``timelines`` writes
    ``out_dir/<stem>_face<id>.png`` per face; ``progress`` is told the frames done of every pass.

    With ``skip_complete``, a video whose ``<stem>.csv`` already exists, with the overlay and
    timelines asked for, is not run again (its summary says ``skipped``): each file is published by
    a rename only once complete, so its existence means done.

    Returns the summaries of the videos that succeeded and ``{video: error message}`` of the others.
    Destinations that cannot be written (:func:`check_destinations`) raise before any video runs.
    Crops of video ``<stem>`` are read from ``crops_root/<stem>/`` (``cropped_aligned`` layout), or
    from ``crops_root`` itself when it holds the crops of a single given video.
    """
    check_unique_stems(videos, "{stem}.csv")
    check_destinations(videos, out_dir, overlay)

    def predict_one(video: Path) -> PredictSummary:
        out_csv = Path(out_dir) / f"{video.stem}.csv"
        overlay_path = None if overlay is None else overlay_path_for(video, overlay, single=len(videos) == 1)
        if skip_complete and outputs_complete(out_csv, overlay_path, timelines):
            # write_csv publishes <stem>.csv only by renaming its finished temporary (in .<stem>.csv.tmp-*/),
            # so an existing <stem>.csv is complete; a killed run leaves only the temporary
            log.info("%s: %s is complete, skipped", video, out_csv)
            return PredictSummary(str(video), str(out_csv), 0, 0, 0, 0, 0.0, skipped=True)
        crops = crops_for(video, crops_root, single=len(videos) == 1)
        return predict_video(video, out_csv, crops_dir=crops, config=config, batch_size=batch_size, models=models,
                             overlay=overlay_path, timelines=timelines, progress=progress,
                             low_latency=low_latency, causal_audio=causal_audio)

    return for_each_video(videos, predict_one)


def overlay_path_for(video: Path, overlay: str | Path, single: bool) -> Path:
    """The overlay of ``video``: ``overlay`` itself for a single video when it names an ``.mp4`` file,
    else ``overlay/<stem>.mp4`` (``overlay`` a folder)."""
    overlay = Path(overlay)
    if single and overlay.suffix.lower() == ".mp4" and not overlay.is_dir():
        return overlay
    return overlay / f"{video.stem}.mp4"


def check_destinations(videos: Sequence[str | Path], out_dir: str | Path, overlay: str | Path | None) -> None:
    """Refuse, before any video is computed, an ``out_dir`` (or overlay folder) that cannot be written
    and an overlay that would be one of the input videos: both would otherwise fail, or destroy the
    input, only after a whole video's work. Creates the folders, as writing the outputs would."""
    folders = {Path(out_dir): "output folder (--out)"}
    if overlay is not None:
        for video in videos:
            target = overlay_path_for(Path(video), overlay, single=len(videos) == 1)
            if target.resolve() == Path(video).resolve():
                raise ValueError(f"{video}: the overlay {target} would overwrite the input video itself; "
                                 "choose another path for --overlay")
            folders.setdefault(target.parent, "overlay folder (--overlay)")
    for folder, what in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise ValueError(f"{folder}: the {what} cannot be written ({error_words(exc, folder)})") from exc


def outputs_complete(out_csv: Path, overlay: Path | None, timelines: bool) -> bool:
    """Whether a video's CSV exists and so do the overlay (when given) and timelines (when asked for).

    Every one is published by a rename once complete, so existing means complete; the timelines
    expected are those of the face ids the CSV holds.
    """
    if not out_csv.is_file() or (overlay is not None and not overlay.is_file()):
        return False
    if not timelines:
        return True
    with out_csv.open(newline="") as fh:
        face_ids = {row.get("face_id") for row in csv.DictReader(fh)} - {None, ""}
    try:
        return all(timeline_path(out_csv.parent, out_csv.stem, int(face_id)).is_file() for face_id in face_ids)
    except ValueError:   # not a CSV predict wrote: predict the video again
        return False


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


@dataclass
class _FollowedFace:
    """What the visual pass kept of one face id: its frames, place and embeddings."""

    frames: list[int] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)   # x, y, w, h
    landmarks: list[np.ndarray] = field(default_factory=list)                     # (5, 2) each
    scores: list[float] = field(default_factory=list)
    embedding: np.ndarray | None = None                                           # (frames, 512) float16


@dataclass(frozen=True)
class FacePrediction:
    """The CSV rows of one face id (``face_id`` None: the frames without any face).

    ``frames`` are frame indices; ``boxes`` (k, 4) x, y, w, h, ``landmarks`` (k, 5, 2) and ``scores``
    (k,) are None when the face's place is unknown (faces read from a crops folder, or no face);
    ``va`` (k, 2) is the sequence model's valence and arousal.
    """

    face_id: int | None
    frames: np.ndarray
    au_prob: np.ndarray       # (k, 12)
    expr_prob: np.ndarray     # (k, 7)
    boxes: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    scores: np.ndarray | None = None
    va: np.ndarray | None = None     # (k, 2) valence, arousal in [-1, 1]; None: not predicted


@dataclass(frozen=True)
class _VisualPass:
    timestamps: np.ndarray                 # (N,) float64 seconds
    faces: dict[int, _FollowedFace]        # face id -> its frames, place and embeddings
    fps: float
    located: bool                          # False when faces came from a crops folder (no box, no landmarks)


def _visual_pass(video_path: Path, models: PredictModels, config: PredictConfig, crops_dir: str | Path | None,
                 batch_size: int, frame_done: Callable[[], None] = lambda: None) -> _VisualPass:
    """Decode the video once, find each frame's faces and embed every followed face in batches."""
    tracker = None if crops_dir is not None else FaceTracker(config.tracking, FaceDetector(config.detector))
    timestamps: list[float] = []
    faces: dict[int, _FollowedFace] = {}
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            images = to_model_input(np.stack(batch)).numpy()
            chunks.append(models.visual(images)["embedding"].astype(np.float16))
            batch.clear()

    owners: list[int] = []     # face id of each embedded crop, in order
    fps = 0.0
    for i, (timestamp, fps, image) in enumerate(decode_frames(video_path, need_pixels=tracker is not None,
                                                                 limits=config.limits)):
        timestamps.append(timestamp)
        if tracker is not None:
            for tracked in tracker.update(image):
                face = faces.setdefault(tracked.face_id, _FollowedFace())
                face.boxes.append((tracked.box.x, tracked.box.y, tracked.box.w, tracked.box.h))
                face.landmarks.append(np.asarray(tracked.landmarks, np.float64))
                face.scores.append(float(tracked.score))
                _add(face, i, tracked.face_id, tracked.crop, owners, batch)
                if len(batch) >= batch_size:
                    flush()
        else:
            crop = _crop_from_folder(Path(crops_dir), i)
            if crop is not None:
                _add(faces.setdefault(0, _FollowedFace()), i, 0, crop, owners, batch)
                if len(batch) >= batch_size:
                    flush()
        frame_done()
    flush()
    if chunks:
        embeddings, owner_ids = np.concatenate(chunks), np.asarray(owners)
        for face_id, face in faces.items():
            face.embedding = embeddings[owner_ids == face_id]
    if len(faces) > 1:
        log.info("%s: %d faces followed", video_path, len(faces))
    return _VisualPass(np.asarray(timestamps, np.float64), faces, fps, located=tracker is not None)


def _add(face: _FollowedFace, frame: int, face_id: int, crop: np.ndarray, owners: list[int],
         batch: list[np.ndarray]) -> None:
    """Queue the crop of face ``face_id`` in ``frame`` for embedding."""
    face.frames.append(frame)
    owners.append(face_id)
    batch.append(crop)


def _predict_faces(frames: _VisualPass, logits: SequenceLogits, audio_embedding: np.ndarray,
                   audio_present: np.ndarray, batch_size: int,
                   causal: bool = False) -> tuple[list[FacePrediction], np.ndarray]:
    """Run the sequence model once per face id, over the whole video, with that face's own embeddings.

    ``logits`` is :meth:`SequenceRunner.video_logits` or (``causal``) the causal mode; a causal run
    takes a faceless frame from the face seen most in the frames up to it, not in the whole video.

    Each face id is a sequence of its own: its embeddings on the frames it was followed in, zeros and
    "no face" elsewhere, and the shared audio (one soundtrack for everyone). Frames where no face was
    followed get one row predicted as the sequence model predicts a frame without a face: from the
    most-seen face's run (its neighbouring frames and the audio), or, in a video with no face at
    all, from the audio alone. Returns the predictions and the (N,) mask of frames with any face.
    """
    n = len(frames.timestamps)
    any_face = np.zeros(n, bool)
    predictions: list[FacePrediction] = []
    reference: _Run | None = None
    runs: dict[int, _Run] = {}     # causal: every face's probabilities and VA
    main = max(frames.faces, key=lambda face_id: (len(frames.faces[face_id].frames), -face_id), default=None)
    for face_id in sorted(frames.faces):
        face = frames.faces[face_id]
        present = np.zeros(n, bool)
        present[face.frames] = True
        embedding = np.zeros((n, EMBEDDING_DIM), np.float16)
        embedding[face.frames] = face.embedding
        run = _run(logits, embedding, audio_embedding, present, audio_present, batch_size)
        if face_id == main:
            reference = run
        if causal:
            runs[face_id] = run
        any_face |= present
        index = np.asarray(face.frames, np.int64)
        predictions.append(FacePrediction(
            face_id, index, run.au[index], run.expr[index],
            np.asarray(face.boxes, np.float64) if frames.located else None,
            np.stack(face.landmarks) if frames.located else None,
            np.asarray(face.scores, np.float64) if frames.located else None,
            va=run.va[index],
        ))
    faceless = np.flatnonzero(~any_face)
    if len(faceless):
        if reference is None:
            reference = _run(logits, np.zeros((n, EMBEDDING_DIM), np.float16), audio_embedding,
                             np.zeros(n, bool), audio_present, batch_size)
        if causal and len(runs) > 1:
            predictions.append(_faceless_causal(frames, runs, faceless))
        else:
            predictions.append(FacePrediction(None, faceless, reference.au[faceless], reference.expr[faceless],
                                              va=reference.va[faceless]))
    return predictions, any_face


@dataclass(frozen=True)
class _Run:
    """One sequence-model run over a whole video: per-frame probabilities and valence-arousal."""

    au: np.ndarray      # (N, 12) sigmoid probabilities
    expr: np.ndarray    # (N, 7) softmax probabilities
    va: np.ndarray      # (N, 2) valence, arousal


def _run(logits: SequenceLogits, visual: np.ndarray, audio: np.ndarray, face_present: np.ndarray,
         audio_present: np.ndarray, batch_size: int) -> _Run:
    """Run ``logits`` once and turn its outputs into probabilities; refuse a VA of the wrong shape."""
    au, expr, va = logits(visual, audio, face_present, audio_present, batch_size)
    va = np.asarray(va, np.float32)
    if va.shape != (len(face_present), len(VA_NAMES)):
        raise ValueError(f"the sequence model gave valence-arousal of shape {va.shape}; "
                         f"expected ({len(face_present)}, {len(VA_NAMES)})")
    return _Run(_sigmoid(au), _softmax(expr), va)


def _faceless_causal(frames: _VisualPass, runs: dict[int, _Run], faceless: np.ndarray) -> FacePrediction:
    """The faceless frames, each from the run of the face seen most in the frames up to it (ties: the
    lower id; before any face, the lowest id's run, which up to then saw no face, as a faceless run)."""
    ids = sorted(runs)
    n = len(frames.timestamps)
    seen = np.zeros((len(ids), n), np.int64)
    for k, face_id in enumerate(ids):
        seen[k, frames.faces[face_id].frames] = 1
    pick = np.cumsum(seen, axis=1)[:, faceless].argmax(axis=0)   # argmax takes the first, the lower id
    au = np.stack([runs[face_id].au for face_id in ids])[pick, faceless]
    expr = np.stack([runs[face_id].expr for face_id in ids])[pick, faceless]
    va = np.stack([runs[face_id].va for face_id in ids])[pick, faceless]
    return FacePrediction(None, faceless, au, expr, va=va)


def _crop_from_folder(folder: Path, index: int) -> np.ndarray | None:
    path = folder / f"{index + 1:05d}.jpg"
    if not path.is_file():
        return None
    try:
        return read_jpeg(path, size=CROP_SIZE)
    except (ImageError, OSError) as exc:
        raise ValueError(f"{path}: unreadable face crop ({exc})") from exc


def write_csv(path: str | Path, timestamps: np.ndarray, audio_present: np.ndarray,
              predictions: Sequence[FacePrediction], au_thresholds: AuThresholds | None = None) -> Path:
    """Write the CSV (columns :data:`CSV_COLUMNS`) atomically: one row per frame per face, ordered by frame
    then face id, the faceless row of a frame (empty face fields) first; an AU is active where its
    probability exceeds its threshold in ``au_thresholds`` (0.5 when not given); ``valence`` and
    ``arousal`` have 3 decimals, empty for a prediction without ``va``.

    Frames with neither a face nor audio are marked ``low_confidence``. The file appears under its
    name only by a rename once fully written, so a ``<stem>.csv`` that exists is complete.
    """
    path = Path(path)
    cuts = np.asarray((au_thresholds or fixed_thresholds()).values, np.float64)
    rows: list[tuple[int, int, list[object]]] = []
    for pred in predictions:
        best = pred.expr_prob.argmax(axis=1)
        active = (np.asarray(pred.au_prob, np.float64) > cuts).astype(int)
        va = _va_fields(pred)
        for k, frame in enumerate(pred.frames):
            frame = int(frame)
            face: list[object] = [""] * len(FACE_COLUMNS)
            if pred.face_id is not None:
                face[0] = pred.face_id
            if pred.boxes is not None and pred.landmarks is not None and pred.scores is not None:
                face[1:] = [f"{pred.scores[k]:.4f}", *(f"{v:.2f}" for v in pred.boxes[k]),
                            *(f"{v:.2f}" for v in pred.landmarks[k].reshape(-1))]
            has_face = pred.face_id is not None
            rows.append((frame, -1 if pred.face_id is None else pred.face_id, [
                frame, f"{timestamps[frame]:.4f}", *face, *(f"{p:.4f}" for p in pred.au_prob[k]), *active[k].tolist(),
                *(f"{p:.4f}" for p in pred.expr_prob[k]), EXPR_NAMES[best[k]], *va[k], int(has_face),
                int(audio_present[frame]), int(not has_face and not audio_present[frame]),
            ]))
    rows.sort(key=lambda row: (row[0], row[1]))
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(row for _, _, row in rows)
    return path


def _va_fields(pred: FacePrediction) -> list[tuple[str, str]]:
    """The ``valence``, ``arousal`` fields of each of ``pred``'s rows: 3 decimals, or empty without ``va``."""
    if pred.va is None:
        return [("", "")] * len(pred.frames)
    va = np.asarray(pred.va, np.float64)
    if va.shape != (len(pred.frames), len(VA_NAMES)):
        raise ValueError(f"face {pred.face_id}: valence-arousal of shape {va.shape} for {len(pred.frames)} frames")
    # "-0.000" would read as a different value from "0.000"; + 0.0 turns -0.0 into 0.0
    return [(f"{v + 0.0:.3f}", f"{a + 0.0:.3f}") for v, a in np.round(va, 3)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
