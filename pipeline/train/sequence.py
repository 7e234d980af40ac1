"""Training of the sequence model on cached embeddings (the ``train-sequence`` stage).

Windows of ``window`` frames (every ``stride`` frames) are sliced from the in-memory cache
(:mod:`pipeline.train.sequence_data`); the AU, expression and valence-arousal heads learn in
alternation (:mod:`pipeline.train.alternating`) with the masked BCE (``pos_weight``), focal and
``1 - CCC`` losses, SGD with momentum (paper §4.2: lr 0.01). The VA head joins the rotation when the
training split has VA labels (:mod:`pipeline.train.va_task`); ``max_windows`` caps each task's
windows per epoch, so a third task does not lengthen the epoch by half. After every epoch the
validation subjects are scored with the ABAW metrics on whole-video predictions
(:func:`~pipeline.inference.sequence.sliding_window_logits`), on ``face_frames`` (frames with a face
crop, the paper's) and on ``all_frames`` (every labelled frame: the model also predicts the
faceless ones). The kept epoch is chosen by the ``selection`` mode
(:mod:`pipeline.train.selection`; default: the held-out training videos' ``face_frames`` score).

State after each epoch goes to ``work_dir/state.pt``, so a killed run resumes where it stopped
(when the params and the stores are unchanged). When training ends, ``out_dir`` receives
``model.pt`` (``{"arch", "state_dict", "modalities", "window", "stride", "config"}``) and
``sequence.onnx``, published together, and ``metrics_path`` ``{"validation": {"face_frames",
"all_frames"}, "selection", "epochs", "best_epoch"}``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.au_thresholds import AuThresholds
from pipeline.config import ConfigError, to_dict
from pipeline.data.manifest import read_manifest
from pipeline.fsio import write_json
from pipeline.inference.features import feature_dim, feature_layout
from pipeline.inference.sequence import sliding_window_logits, torch_run_fn
from pipeline.model_files import sequence as sequence_files
from pipeline.model_files.onnx_export import DEFAULT_PARITY_RTOL, check_parity_rtol
from pipeline.models.sequence import SequenceArch, SequenceModel
from pipeline.storage.embedding_store import EmbeddingStore
from pipeline.train.alternating import ROTATION, TaskSchedule, alternating_batches
from pipeline.train.loop import TrainResult, Trainer, checked_step, run_epochs, subject_metrics
from pipeline.train.loop_state import LoopState
from pipeline.train.losses import subjects_pos_weight, task_loss
from pipeline.train.optim import OptimConfig
from pipeline.train.selection import (
    Mode, SelectionConfig, calibrate_au, held_out_au, selection_report, selection_split,
)
from pipeline.train.splits import Splits, task_splits
from pipeline.train.sequence_data import SequenceCache, WindowBatch, WindowLoader, load_sequence_cache
from pipeline.train.va_task import check_va_mse_weight, task_rotation

log = logging.getLogger(__name__)

SECTION = "train_sequence"
STATE_FILE = "state.pt"


@dataclass(frozen=True)
class SequenceTrainConfig:
    """The ``train_sequence`` params section."""

    modalities: Literal["visual", "audio", "both"] = "both"
    window: int = 30                  # frames per window (paper: 30)
    stride: int = 10                  # frames between window starts, in training and inference
    layers: int = 1                   # transformer encoder layers (paper: 1)
    heads: int = 4
    d_model: int = 128
    ff_mult: int = 2                  # feed-forward width = ff_mult * d_model
    dropout: float = 0.1
    input_projection: bool = True     # linear D -> d_model before the encoder
    positional: Literal["learned", "sinusoidal"] = "learned"
    epochs: int = 20
    batch_size: int = 32              # windows per batch
    max_windows: int | None = None    # cap on training windows per task per epoch (None: all)
    lr: float = 0.01                  # SGD (paper §4.2)
    momentum: float = 0.9
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    focal_gamma: float = 2.0
    pos_weight_cap: float = 10.0
    va_mse_weight: float = 0.0        # VA loss = 1 - CCC + va_mse_weight * MSE
    alternation: Literal["epoch", "batch"] = "batch"
    sources: tuple[str, ...] = ("affwild2",)   # manifest sources whose subjects are used
    seed: int = 0
    parity_rtol: float = DEFAULT_PARITY_RTOL   # sequence.onnx vs torch, relative to the output's scale

    def __post_init__(self) -> None:
        check_parity_rtol(self.parity_rtol)
        for name in ("window", "stride", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if self.max_windows is not None and self.max_windows < 1:
            raise ConfigError(f"must be >= 1 or null, got {self.max_windows}", key="max_windows")
        check_va_mse_weight(self.va_mse_weight)
        try:
            self.optim()
            self.arch()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc), key="model") from exc

    def optim(self) -> OptimConfig:
        """The shared optimiser and loss block (SGD with momentum, paper §4.2)."""
        return OptimConfig.of(self)

    def arch(self) -> SequenceArch:
        """The network shape these params describe."""
        input_dim = feature_dim(self.modalities)
        return SequenceArch(
            input_dim=input_dim,
            d_model=self.d_model if self.input_projection else input_dim,
            layers=self.layers, heads=self.heads, dropout=self.dropout,
            input_projection=self.input_projection, positional=self.positional,
            max_len=self.window, ff_mult=self.ff_mult,
        )


def train_sequence(
    manifest_path: str | Path,
    visual_path: str | Path,
    audio_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    config: SequenceTrainConfig,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
    eval_batch_size: int = 64,
    selection: SelectionConfig | None = None,
) -> TrainResult:
    """Train, keep an epoch by ``selection`` (default holdout), publish ``model.pt`` + ``sequence.onnx``
    and the metrics JSON."""
    device = torch.device(device)
    selection = selection or SelectionConfig()
    manifest = read_manifest(manifest_path)
    held = selection_split(manifest, selection)
    splits = task_splits(manifest, config.sources, held)
    started = time.perf_counter()
    cache = load_sequence_cache(manifest, visual_path, audio_path, splits.all_subjects(), config.modalities)
    log.info("loaded %d subjects (%.1f MiB) in %.1fs", len(cache.names), cache.nbytes / 2**20,
             time.perf_counter() - started)
    data_key = _data_key(visual_path, audio_path, splits)
    result = fit(cache, splits, config, Path(work_dir), device, data_key, eval_batch_size, mode=selection.mode)
    thresholds = held_out_thresholds(result.model, cache, splits, config, selection, device, eval_batch_size)
    log.info("AU thresholds: %s", thresholds.describe())
    result.metrics = {"validation": result.metrics, "selection": selection_report(selection, held, result.history),
                      "epochs": config.epochs, "best_epoch": result.best_epoch, AU_THRESHOLDS: thresholds.record()}
    publish_outputs(result.model, config, out_dir, thresholds)
    write_json(metrics_path, result.metrics)
    return result


def fit(
    cache: SequenceCache,
    splits: Splits,
    config: SequenceTrainConfig,
    work_dir: Path,
    device: torch.device,
    data_key: dict[str, Any] | None = None,
    eval_batch_size: int = 64,
    *,
    mode: Mode,
) -> TrainResult:
    """The training loop; the result's model is the kept epoch's (eval mode), its metrics that epoch's
    validation report. ``mode`` (:mod:`pipeline.train.selection`) says how the epoch is kept; holdout
    scores ``splits.selection``."""
    if mode == "holdout" and not splits.selection_subjects():
        raise ValueError(f"{SECTION}: selection mode holdout but no held-out selection subject; raise "
                         f"selection.share or set selection.mode to validation or last")
    torch.manual_seed(config.seed)
    model = SequenceModel(config.arch()).to(device)
    optimizer = config.optim().build(model.parameters())
    au_labels = [cache.subject_labels(name)[0] for name in splits.train["au"]]
    pos_weight = subjects_pos_weight(au_labels, config.pos_weight_cap).to(device)
    loaders = {task: _loader(cache, splits.train.get(task, []), task, config) for task in ROTATION}
    schedule = TaskSchedule(config.alternation, task_rotation({t: len(loaders[t]) > 0 for t in ROTATION}, SECTION))
    # ``epochs`` is not part of the key: a run with more epochs continues a shorter one.
    # The export tolerance does not change training: loosening it after a failed check resumes.
    key = {"config": {k: v for k, v in to_dict(config).items() if k not in ("epochs", "parity_rtol")},
           "mode": mode, "data": data_key}
    loop = LoopState.resume(work_dir / STATE_FILE, key, model, optimizer, max_epochs=config.epochs)
    trainer = _SequenceTrainer(model, optimizer, cache, splits, config, device, loaders, schedule, pos_weight,
                               eval_batch_size)
    best = run_epochs(loop, SECTION, config.epochs, trainer, max_grad_norm=config.max_grad_norm, mode=mode)
    return TrainResult(model, dict(best["metrics"]), best["epoch"], loop.history, loop.resumed_from)


class _SequenceTrainer(Trainer):
    """The sequence model's epochs over embedding windows, scored per subject on validation and held-out videos."""

    def __init__(self, model: SequenceModel, optimizer: torch.optim.Optimizer, cache: SequenceCache,
                 splits: Splits, config: SequenceTrainConfig, device: torch.device, loaders: dict[str, WindowLoader],
                 schedule: TaskSchedule, pos_weight: torch.Tensor, eval_batch_size: int) -> None:
        self.model, self.optimizer = model, optimizer
        self.cache, self.splits, self.config, self.device = cache, splits, config, device
        self.loaders, self.schedule, self.pos_weight = loaders, schedule, pos_weight
        self.eval_batch_size = eval_batch_size

    def fit_epoch(self, loop: LoopState, epoch: int) -> dict[str, list[float]]:
        """One epoch of alternating window batches of the rotation's tasks."""
        for loader in self.loaders.values():
            loader.set_epoch(epoch)
        active = {task: self.loaders[task] for task in self.schedule.tasks}
        return train_batches(self.model, self.optimizer, self.schedule, epoch, active, self.pos_weight,
                             self.config, self.device)

    def validate(self) -> dict[str, dict[str, Any]]:
        """The report on the validation subjects."""
        return validate(self.model, self.cache, self.splits.validation, self.config, self.device, self.eval_batch_size)

    def select(self) -> dict[str, dict[str, Any]]:
        """The report on the held-out selection subjects."""
        return validate(self.model, self.cache, self.splits.selection, self.config, self.device, self.eval_batch_size)


def train_batches(
    model: SequenceModel, optimizer: torch.optim.Optimizer, schedule: TaskSchedule, epoch: int,
    loaders: dict[str, WindowLoader], pos_weight: torch.Tensor, config: SequenceTrainConfig, device: torch.device,
) -> dict[str, list[float]]:
    """One epoch (0-based ``epoch``) of alternating updates; returns each task's batch losses."""
    model.train()
    losses: dict[str, list[float]] = {task: [] for task in loaders}
    for number, (task, batch) in enumerate(alternating_batches(schedule, epoch, loaders), start=1):
        loss = batch_loss(model, batch, task, pos_weight, config.focal_gamma, device, config.va_mse_weight)
        losses[task].append(checked_step(model, optimizer, task, loss, SECTION, epoch + 1, number,
                                         max_grad_norm=config.max_grad_norm))
    return losses


def _loader(cache: SequenceCache, names: list[str], task: str, config: SequenceTrainConfig) -> WindowLoader:
    """Shuffled training windows of ``names`` that hold a ``task`` label, ``max_windows`` of them per epoch."""
    windows = cache.windows(names, config.window, config.stride, task=task)
    return WindowLoader(cache, windows, config.window, config.batch_size, shuffle=True, seed=config.seed,
                        limit=config.max_windows)


def batch_loss(
    model: SequenceModel, batch: WindowBatch, task: str, pos_weight: torch.Tensor, gamma: float, device: torch.device,
    va_mse_weight: float = 0.0,
) -> torch.Tensor:
    """The active task's masked loss over every labelled frame of a batch of windows."""
    features = torch.from_numpy(batch.features).to(device).float()  # float16 batches: convert on the device
    padding = torch.from_numpy(batch.padding).to(device) if batch.padding.any() else None
    outputs = dict(zip(("au", "expr", "va"), model(features, padding)))
    labels = {"au": batch.au, "expr": batch.expr, "va": batch.va}[task]
    targets = torch.from_numpy(labels if task == "va" else labels.astype(np.int64)).to(device)
    # (B, L, ...) windows -> (B*L, ...) frames
    return task_loss(task, outputs[task].flatten(0, 1), targets.flatten(0, 1), pos_weight, gamma,
                     va_mse_weight=va_mse_weight)


def predict_subjects(
    model: SequenceModel, cache: SequenceCache, names: list[str], window: int, stride: int,
    device: torch.device, batch_size: int = 64,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Whole-video (au, expr) logits and va predictions of each subject, by overlapping windows."""
    run = torch_run_fn(model, device)
    return {
        name: sliding_window_logits(run, cache.subject_features(name), window, stride, batch_size)
        for name in names
    }


def validate(
    model: SequenceModel, cache: SequenceCache, subjects: dict[str, list[str]], config: SequenceTrainConfig,
    device: torch.device, batch_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """ABAW metrics of each task over its ``subjects`` (e.g. ``splits.validation``), on ``face_frames``
    and ``all_frames`` (AU threshold: logit > 0); ``va`` where VA subjects have labels."""
    va_names = subjects.get("va", [])
    names = list(dict.fromkeys(subjects["au"] + subjects["expr"] + va_names))
    outputs = predict_subjects(model, cache, names, config.window, config.stride, device, batch_size)
    return subject_metrics(
        outputs, lambda n: (*cache.subject_labels(n), cache.subject_faces(n), cache.subject_va(n)), subjects
    )


def held_out_thresholds(model: SequenceModel, cache: SequenceCache, splits: Splits, config: SequenceTrainConfig,
                        selection: SelectionConfig, device: torch.device, batch_size: int = 64) -> AuThresholds:
    """The kept model's AU thresholds, chosen on the held-out AU subjects' face frames
    (:func:`pipeline.train.selection.calibrate_au`)."""
    names = splits.selection["au"]
    logits = predict_subjects(model, cache, names, config.window, config.stride, device, batch_size)
    return calibrate_au(selection, *held_out_au(
        logits, lambda n: (*cache.subject_labels(n), cache.subject_faces(n)), names))


def publish_outputs(model: SequenceModel, config: SequenceTrainConfig, out_dir: str | Path,
                    au_thresholds: AuThresholds | None = None) -> None:
    """Write ``model.pt`` and ``sequence.onnx`` (both with ``au_thresholds``) into ``out_dir``, both or
    neither (:func:`pipeline.model_files.sequence.publish`)."""
    sequence_files.publish(out_dir, model, to_dict(config), config.parity_rtol, feature_layout(config.modalities),
                           au_thresholds)


def _data_key(visual_path: str | Path, audio_path: str | Path, splits: Splits) -> dict[str, Any]:
    """What the training data depends on, so a resumed run never mixes two datasets."""
    return {
        "visual": EmbeddingStore.open_read(visual_path).fingerprint,
        "audio": EmbeddingStore.open_read(audio_path).fingerprint,
        "train": splits.train,
        "validation": splits.validation,
        "selection": splits.selection,
    }
