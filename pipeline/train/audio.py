"""Training of the audio stream and the fusion head with the visual model frozen (``train-audio``).

Paper §3: after the visual model, its parameters are frozen and an audio stream is added. The
visual model's per-frame embeddings are therefore read from the visual embedding store, never
recomputed; a TDNN on log-mel windows (:mod:`pipeline.models.tdnn`) and a fusion head on
[visual, audio] (:mod:`pipeline.models.fusion`) are trained together with the masked BCE
(``pos_weight``), focal and ``1 - CCC`` losses, the AU, expression and valence-arousal heads learning
in alternation (VA only when the training split has VA labels, :mod:`pipeline.train.va_task`).

Every video's soundtrack is decoded and turned into one log-mel once per run and kept in memory
(about 51 KB per second of audio). A training sample is a frame: its visual embedding, its mel
window and its labels. Frames are drawn in *segments* of ``segment_frames`` consecutive frames of
one subject, so the windows of a segment share the TDNN's convolutions (:mod:`pipeline.models.tdnn_spans`).
Frames without a face are kept (their visual embedding is zero), so the audio has to carry them.

After every epoch the validation subjects (the leakage-free protocol's) are scored with the ABAW
metrics on ``face_frames`` (frames with a face crop, the paper's) and on ``all_frames`` (every
labelled frame: the fusion head also predicts the faceless ones), next to the visual model's own
cached logits on the same frames (``visual_only``). The kept epoch is chosen by the ``selection``
mode (:mod:`pipeline.train.selection`; default: the held-out training videos' ``face_frames``).
State after each epoch goes to ``work_dir/state.pt`` so a killed run resumes. ``out_dir`` finally
receives ``model.pt``, ``tdnn.onnx`` and ``tdnn.int8.onnx`` (calibrated on the training videos'
soundtracks), written together by :mod:`pipeline.model_files.audio`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.models.tdnn_spans import SpanBatch, embed_frames, encode_spans, span_batch
from pipeline.audio.features import AudioConfig, LogMel
from pipeline.audio.windows import VideoAudio, track_audio, video_audio
from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.au_thresholds import AuThresholds
from pipeline.config import ConfigError, to_dict
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.fsio import write_json
from pipeline.labels import TASKS
from pipeline.model_files import audio as audio_files
from pipeline.model_files.onnx_export import DEFAULT_PARITY_RTOL, check_parity_rtol
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.storage.embedding_store import EmbeddingStore
from pipeline.train.alternating import ROTATION, TaskSchedule
from pipeline.train.epoch_plan import epoch_plan
from pipeline.train.loop import TrainResult, Trainer, checked_step, run_epochs, subject_metrics
from pipeline.train.loop_state import LoopState
from pipeline.train.losses import subjects_pos_weight, task_loss
from pipeline.train.optim import OptimConfig
from pipeline.train.selection import (
    Mode, SelectionConfig, calibrate_au, held_out_au, selection_report, selection_split,
)
from pipeline.train.splits import Splits, task_splits
from pipeline.train.va_task import (
    check_va_mse_weight, read_va_array, read_va_labels, task_rotation, va_labelled,
)

log = logging.getLogger(__name__)

SECTION = "train_audio"
STATE_FILE = "state.pt"
# params that shape only the exported files, not the training (kept out of the resume key)
EXPORT_ONLY: tuple[str, ...] = ("parity_rtol", "int8_windows")
VISUAL_ARRAYS: tuple[str, ...] = ("embedding", "face_present", "au", "expr", "au_logits", "expr_logits")


@dataclass(frozen=True)
class AudioTrainConfig:
    """The ``train_audio`` params section."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    tdnn: TDNNConfig = field(default_factory=TDNNConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    epochs: int = 12
    segment_frames: int = 32          # consecutive frames of one subject per training segment
    batch_segments: int = 8           # segments per batch
    max_segments: int | None = None   # cap on segments per task per epoch (None: all)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9             # SGD only
    weight_decay: float = 0.0
    max_grad_norm: float | None = 5.0
    focal_gamma: float = 2.0
    pos_weight_cap: float = 10.0
    va_mse_weight: float = 0.0        # VA loss = 1 - CCC + va_mse_weight * MSE
    alternation: Literal["epoch", "batch"] = "batch"
    sources: tuple[str, ...] = ("affwild2",)   # manifest sources whose subjects are used
    seed: int = 0
    parity_rtol: float = DEFAULT_PARITY_RTOL   # tdnn.onnx vs torch, relative to the output's scale
    int8_windows: int = 256           # training log-mel windows (seed: ``seed``) calibrating tdnn.int8.onnx

    def __post_init__(self) -> None:
        check_parity_rtol(self.parity_rtol)
        if self.int8_windows < 1:
            raise ConfigError(f"must be >= 1, got {self.int8_windows}", key="int8_windows")
        for name in ("epochs", "segment_frames", "batch_segments"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if self.max_segments is not None and self.max_segments < 1:
            raise ConfigError(f"must be >= 1 or null, got {self.max_segments}", key="max_segments")
        check_va_mse_weight(self.va_mse_weight)
        self.optim()
        if self.audio.context_frames < self.tdnn.receptive_field:
            raise ConfigError(
                f"the audio window ({self.audio.context_frames} mel frames for {self.audio.context_s} s) is shorter "
                f"than the TDNN's receptive field ({self.tdnn.receptive_field})", key="audio.context_s"
            )

    def optim(self) -> OptimConfig:
        """The shared optimiser and loss block (its checks raise ``train_audio.<key>`` errors)."""
        try:
            return OptimConfig.of(self)
        except ValueError as exc:
            raise ValueError(f"train_audio.{exc}") from exc

    def tdnn_arch(self) -> TDNNConfig:
        """The TDNN architecture, its input width taken from the number of mel bands."""
        return replace(self.tdnn, in_channels=self.audio.n_mels)


@dataclass(frozen=True)
class SubjectData:
    """Everything one subject contributes: visual store arrays and its video's audio."""

    name: str
    video: str
    audio: VideoAudio           # shared by the subjects of one video
    visual: np.ndarray          # (N, 512) float16, zeros where no face
    face_present: np.ndarray    # (N,) bool
    au: np.ndarray              # (N, 12) int8
    expr: np.ndarray            # (N,) int8
    au_logits: np.ndarray       # (N, 12) float32, the visual model's own
    expr_logits: np.ndarray     # (N, 7) float32
    va: np.ndarray              # (N, 2) float32 valence, arousal labels; NaN unlabelled
    va_pred: np.ndarray | None  # (N, 2) float32, the visual model's own (None: a store without it)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.expr)

    def labelled(self, task: str) -> np.ndarray:
        """Frames (bool mask) carrying a label for ``task`` (any AU, or either VA dimension, counts)."""
        if task == "va":
            return va_labelled(self.va)
        return (self.au >= 0).any(axis=1) if task == "au" else self.expr >= 0


@dataclass(frozen=True)
class Batch:
    """Training batch: audio spans plus each frame's visual embedding and labels."""

    spans: SpanBatch
    visual: np.ndarray   # (N, 512) float16
    au: np.ndarray       # (N, 12) int8
    expr: np.ndarray     # (N,) int8
    va: np.ndarray       # (N, 2) float32, NaN unlabelled


Segment = tuple[str, int, int]   # (subject, first frame, end frame)


# -- data --------------------------------------------------------------------------------------------


def load_subjects(
    manifest: Manifest, visual_path: str | Path, names: list[str], audio_cfg: AudioConfig
) -> dict[str, SubjectData]:
    """Read each subject's visual arrays and decode each video's audio once."""
    store = EmbeddingStore.open_read(visual_path)
    logmel = LogMel(audio_cfg)
    audio_cache: dict[str, VideoAudio] = {}
    subjects: dict[str, SubjectData] = {}
    for name in names:
        record = manifest.by_name(name)
        if not store.is_complete(name):
            raise ValueError(f"{visual_path}: no complete entry for subject {name!r}; run embed-visual first")
        arrays = store.read(name, VISUAL_ARRAYS)
        n_frames = len(arrays["expr"])
        if n_frames != record.n_frames:
            raise ValueError(f"{visual_path}/{name}: {n_frames} frames, but the manifest says {record.n_frames}")
        if record.video not in audio_cache:
            if record.video_path is None or record.fps is None:
                audio_cache[record.video] = track_audio(None, n_frames, record.fps or 30.0, audio_cfg)
            else:
                audio_cache[record.video] = video_audio(record.video_path, n_frames, record.fps, audio_cfg, logmel)
        audio = audio_cache[record.video]
        if audio.n_frames != n_frames:
            raise ValueError(f"subject {name!r} has {n_frames} frames but video {record.video!r} has {audio.n_frames}")
        subjects[name] = SubjectData(
            name=name, video=record.video, audio=audio,
            visual=arrays["embedding"].astype(np.float16, copy=False),
            face_present=arrays["face_present"].astype(bool),
            au=arrays["au"].astype(np.int8), expr=arrays["expr"].astype(np.int8),
            au_logits=arrays["au_logits"].astype(np.float32), expr_logits=arrays["expr_logits"].astype(np.float32),
            va=read_va_labels(store, name, n_frames), va_pred=read_va_array(store, name, n_frames, "va_pred"),
        )
    return subjects


def task_segments(subjects: dict[str, SubjectData], names: list[str], task: str, segment_frames: int) -> list[Segment]:
    """Consecutive runs of ``segment_frames`` frames of ``names`` holding at least one ``task`` label."""
    segments: list[Segment] = []
    for name in names:
        labelled = subjects[name].labelled(task)
        for begin in range(0, len(labelled), segment_frames):
            end = min(begin + segment_frames, len(labelled))
            if labelled[begin:end].any():
                segments.append((name, begin, end))
    return segments


def make_batch(subjects: dict[str, SubjectData], segments: list[Segment]) -> Batch:
    """Gather the frames of ``segments`` into one :class:`Batch`."""
    runs = [(subjects[name].audio, np.arange(begin, end)) for name, begin, end in segments]
    parts = [(subjects[name], slice(begin, end)) for name, begin, end in segments]
    return Batch(
        spans=span_batch(runs),
        visual=np.concatenate([s.visual[sl] for s, sl in parts]),
        au=np.concatenate([s.au[sl] for s, sl in parts]),
        expr=np.concatenate([s.expr[sl] for s, sl in parts]),
        va=np.concatenate([s.va[sl] for s, sl in parts]),
    )


# -- model and loss ----------------------------------------------------------------------------------


class AudioVisualModel(nn.Module):
    """TDNN + fusion head; exposes ``au_head``/``expr_head``/``va_head`` for the alternating updates."""

    def __init__(self, tdnn: TDNN, fusion: FusionHead) -> None:
        super().__init__()
        self.tdnn = tdnn
        self.fusion = fusion

    @property
    def au_head(self) -> nn.Module:
        """The fusion head's AU layer."""
        return self.fusion.au_head

    @property
    def expr_head(self) -> nn.Module:
        """The fusion head's expression layer."""
        return self.fusion.expr_head

    @property
    def va_head(self) -> nn.Module:
        """The fusion head's valence-arousal layer."""
        return self.fusion.va_head

    def forward(self, spans: SpanBatch, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(au_logits, expr_logits, va) of every frame of a batch."""
        audio = encode_spans(self.tdnn, spans, visual.device)
        return self.fusion(visual, audio)


def batch_loss(
    model: AudioVisualModel, batch: Batch, task: str, pos_weight: torch.Tensor, gamma: float, device: torch.device,
    va_mse_weight: float = 0.0,
) -> torch.Tensor:
    """The active task's masked loss over the labelled frames of a batch."""
    visual = torch.from_numpy(batch.visual).to(device=device, dtype=torch.float32)
    outputs = dict(zip(("au", "expr", "va"), model(batch.spans, visual)))
    labels = {"au": batch.au, "expr": batch.expr, "va": batch.va}[task]
    targets = torch.from_numpy(labels if task == "va" else labels.astype(np.int64)).to(device)
    return task_loss(task, outputs[task], targets, pos_weight, gamma, va_mse_weight=va_mse_weight)


def build_model(config: AudioTrainConfig) -> AudioVisualModel:
    """A fresh TDNN + fusion head for ``config`` (seeded by the caller)."""
    return AudioVisualModel(TDNN(config.tdnn_arch()), FusionHead(config.fusion))


# -- evaluation --------------------------------------------------------------------------------------


def predict_subjects(
    model: AudioVisualModel, subjects: dict[str, SubjectData], names: list[str], device: torch.device,
    chunk_frames: int = 256,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fused (au (N,12), expr (N,7)) logits and va (N,2) of every frame of each subject (audio
    embedded once per video)."""
    model.eval()
    audio_cache: dict[str, np.ndarray] = {}
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    with torch.no_grad():
        for name in names:
            subject = subjects[name]
            if subject.video not in audio_cache:
                audio_cache[subject.video] = embed_frames(model.tdnn, subject.audio, None, chunk_frames, device)
            audio = torch.from_numpy(audio_cache[subject.video]).to(device)
            visual = torch.from_numpy(subject.visual).to(device=device, dtype=torch.float32)
            au, expr, va = model.fusion(visual, audio)
            out[name] = (au.cpu().numpy(), expr.cpu().numpy(), va.cpu().numpy())
    return out


def score(
    outputs: dict[str, tuple[np.ndarray, ...]], subjects: dict[str, SubjectData],
    names: dict[str, list[str]],
) -> dict[str, dict[str, Any]]:
    """ABAW metrics per task over the labelled frames of each task's subjects ``names`` (e.g.
    ``splits.validation``), on ``face_frames`` and ``all_frames`` (AU threshold: logit > 0).

    ``outputs`` are each subject's ``(au_logits, expr_logits)`` and, for the VA subjects, its VA
    predictions third; without them (``outputs`` of two arrays) the report has no ``va``."""
    return subject_metrics(
        outputs, lambda n: (subjects[n].au, subjects[n].expr, subjects[n].face_present, subjects[n].va), names
    )


def visual_only_metrics(subjects: dict[str, SubjectData], splits: Splits) -> dict[str, dict[str, Any]]:
    """The same validation metrics for the frozen visual model's cached outputs (zeros where there is
    no face); VA only from a store that holds the visual model's ``va_pred``."""
    cached = {name: (s.au_logits, s.expr_logits) + (() if s.va_pred is None else (s.va_pred,))
              for name, s in subjects.items()}
    return score(cached, subjects, splits.validation)


# -- loop --------------------------------------------------------------------------------------------


def fit(
    subjects: dict[str, SubjectData],
    splits: Splits,
    config: AudioTrainConfig,
    work_dir: str | Path,
    device: torch.device,
    data_key: dict[str, Any] | None = None,
    *,
    mode: Mode,
) -> TrainResult:
    """The training loop; the result's model is the kept epoch's (eval mode), its metrics that epoch's
    validation report. ``mode`` (:mod:`pipeline.train.selection`) says how the epoch is kept; holdout
    scores ``splits.selection``."""
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    optimizer = config.optim().build(model.parameters())
    pos_weight = subjects_pos_weight([subjects[n].au for n in splits.train["au"]], config.pos_weight_cap).to(device)
    segments = {task: task_segments(subjects, splits.train.get(task, []), task, config.segment_frames)
                for task in ROTATION}
    schedule = TaskSchedule(config.alternation, task_rotation({t: bool(segments[t]) for t in ROTATION}, SECTION))
    validation_names = _scored_subjects(splits.validation)
    selection_names = _scored_subjects(splits.selection)
    if mode == "holdout" and not selection_names:
        raise ValueError(f"{SECTION}: selection mode holdout but no held-out selection subject; raise "
                         f"selection.share or set selection.mode to validation or last")
    # The export tolerance and the int8 calibration do not change training: changing them resumes.
    key = {"config": {k: v for k, v in to_dict(config).items() if k not in EXPORT_ONLY}, "mode": mode,
           "data": data_key}
    loop = LoopState.resume(Path(work_dir) / STATE_FILE, key, model, optimizer)
    trainer = _AudioTrainer(model, optimizer, subjects, splits, config, device, segments, schedule, pos_weight,
                            (validation_names, selection_names))
    best = run_epochs(loop, SECTION, config.epochs, trainer, max_grad_norm=config.max_grad_norm, mode=mode)
    return TrainResult(model, dict(best["metrics"]), best["epoch"], loop.history, loop.resumed_from)


class _AudioTrainer(Trainer):
    """The fusion model's epochs over video segments, scored per subject on validation and held-out videos."""

    def __init__(self, model: AudioVisualModel, optimizer: torch.optim.Optimizer, subjects: dict[str, SubjectData],
                 splits: Splits, config: AudioTrainConfig, device: torch.device,
                 segments: dict[str, list[Segment]], schedule: TaskSchedule, pos_weight: torch.Tensor,
                 scored: tuple[list[str], list[str]]) -> None:
        self.model, self.optimizer = model, optimizer
        self.subjects, self.splits, self.config, self.device = subjects, splits, config, device
        self.segments, self.schedule, self.pos_weight = segments, schedule, pos_weight
        self.validation_names, self.selection_names = scored

    def fit_epoch(self, loop: LoopState, epoch: int) -> dict[str, list[float]]:
        """One epoch of alternating segment batches of the rotation's tasks (a fresh random subset per epoch)."""
        config, tasks = self.config, self.schedule.tasks
        self.model.train()
        plan = epoch_plan(self.schedule, epoch, {t: len(self.segments[t]) for t in tasks}, config.batch_segments,
                          config.seed, max_frames=config.max_segments, min_batch=1)
        losses: dict[str, list[float]] = {task: [] for task in tasks}
        for number, (task, index) in enumerate(plan, start=1):
            batch = make_batch(self.subjects, [self.segments[task][i] for i in index])
            loss = batch_loss(self.model, batch, task, self.pos_weight, config.focal_gamma, self.device,
                              config.va_mse_weight)
            losses[task].append(checked_step(self.model, self.optimizer, task, loss, SECTION, epoch + 1, number,
                                             max_grad_norm=config.max_grad_norm))
        return losses

    def validate(self) -> dict[str, dict[str, Any]]:
        """The report on the validation subjects."""
        predicted = predict_subjects(self.model, self.subjects, self.validation_names, self.device)
        return score(predicted, self.subjects, self.splits.validation)

    def select(self) -> dict[str, dict[str, Any]]:
        """The report on the held-out selection subjects."""
        predicted = predict_subjects(self.model, self.subjects, self.selection_names, self.device)
        return score(predicted, self.subjects, self.splits.selection)


def _scored_subjects(split: dict[str, list[str]]) -> list[str]:
    """The subjects one split scores for any task, in first-seen order (AU, expression, VA)."""
    return list(dict.fromkeys(name for task in TASKS for name in split.get(task, [])))


# -- outputs -----------------------------------------------------------------------------------------


def publish_outputs(model: AudioVisualModel, config: AudioTrainConfig, out_dir: str | Path,
                    calibration: Mapping[str, VideoAudio] | None = None,
                    au_thresholds: AuThresholds | None = None) -> None:
    """Write ``model.pt`` (with ``au_thresholds``), ``tdnn.onnx`` and, with ``calibration``,
    ``tdnn.int8.onnx`` into ``out_dir`` (:func:`pipeline.model_files.audio.publish`)."""
    audio_files.publish(out_dir, model.tdnn, model.fusion, config.audio, config.seed, config.parity_rtol,
                        calibration, config.int8_windows, au_thresholds)


def held_out_thresholds(model: AudioVisualModel, subjects: dict[str, SubjectData], splits: Splits,
                        selection: SelectionConfig, device: torch.device) -> AuThresholds:
    """The kept model's AU thresholds, chosen on the held-out AU subjects' face frames
    (:func:`pipeline.train.selection.calibrate_au`)."""
    names = splits.selection["au"]
    logits = predict_subjects(model, subjects, names, device)
    return calibrate_au(selection, *held_out_au(
        logits, lambda n: (subjects[n].au, subjects[n].expr, subjects[n].face_present), names))


def train_audio(
    prepared_dir: str | Path,
    visual_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    config: AudioTrainConfig,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
    selection: SelectionConfig | None = None,
) -> TrainResult:
    """Train the TDNN + fusion head, publish ``model.pt`` + ``tdnn.onnx`` and write the metrics JSON.

    The metrics are ``{"validation": {"face_frames": {"au": {f1, acc, score}, "expr": {...}, "score",
    "frames"}, "all_frames": {...}}, "visual_only": {same}, "selection", "epochs", "best_epoch"}``:
    the kept epoch's validation report (``score`` is the mean of the two task scores) and how it
    was kept (``selection``, default holdout; :func:`pipeline.train.selection.selection_report`).
    """
    device = torch.device(device)
    selection = selection or SelectionConfig()
    manifest = read_manifest(Path(prepared_dir) / "manifest.json")
    held = selection_split(manifest, selection)
    splits = task_splits(manifest, config.sources, held)
    started = time.perf_counter()
    subjects = load_subjects(manifest, visual_path, splits.all_subjects(), config.audio)
    log.info("loaded %d subjects and %d soundtracks in %.1fs", len(subjects),
             len({s.video for s in subjects.values()}), time.perf_counter() - started)
    data_key = {"visual": EmbeddingStore.open_read(visual_path).fingerprint,
                "train": splits.train, "validation": splits.validation, "selection": splits.selection}
    result = fit(subjects, splits, config, work_dir, device, data_key, mode=selection.mode)
    thresholds = held_out_thresholds(result.model, subjects, splits, selection, device)
    log.info("AU thresholds: %s", thresholds.describe())
    result.metrics = {
        "validation": result.metrics, "visual_only": visual_only_metrics(subjects, splits),
        "selection": selection_report(selection, held, result.history),
        "epochs": config.epochs, "best_epoch": result.best_epoch, AU_THRESHOLDS: thresholds.record(),
    }
    train_videos = {subjects[name].video: subjects[name].audio for task in TASKS for name in splits.train[task]}
    publish_outputs(result.model, config, out_dir, calibration=train_videos, au_thresholds=thresholds)
    write_json(metrics_path, result.metrics)
    return result
