"""Fine-tuning of the multi-task visual model (paper §3.1, §4.2): the ``finetune-visual`` stage.

A (pretrained) IResNet backbone with an AU head, an expression head and a valence-arousal head is
trained on face frames that carry AU labels (Aff-Wild2 train, plus BP4D when ``use_bp4d``),
expression labels or valence-arousal labels, the heads updated in rotation
(:mod:`pipeline.train.alternating`; expression, AU, VA): AU head by BCE with per-AU ``pos_weight``,
expression head by focal loss, VA head by ``1 - CCC`` (plus ``va_mse_weight`` times the MSE). A
dataset without VA labels trains the AU and expression heads alone (one INFO line says so). After
every epoch the model is scored with the ABAW metrics (AU: sigmoid > 0.5; EXPR: argmax; VA: CCC) on
the leakage-free validation sets and, with the default ``selection.mode: holdout``, on the training
videos held out for selection (:mod:`pipeline.train.selection`); the epoch with the best mean of the
tasks' scores on the held-out ``face_frames`` is kept, so the validation scores are only reported.

The model sees face crops only. Its validation report gives ``face_frames`` (the model's own
predictions, the frames the paper scores) and ``all_frames``: the labelled frames without a face
crop added at the prediction the pipeline gives them downstream, the zero logits and VA that
``embed-visual`` stores for them (no AU active, Neutral, valence and arousal 0), as ``evaluate``
scores the visual model.

The epoch loop, the best-epoch selection, the divergence checks and the resume state are the
ones every trainer shares (:mod:`pipeline.train.loop`, :mod:`pipeline.train.loop_state`); this
module holds what is particular to the visual model: its frames, its augmentation and its
learning-rate schedule: an optional linear warm-up (``warmup_epochs``), then the per-batch
``schedule``, the backbone's parameters at ``backbone_lr_mult`` times the heads' learning rate (a
pretrained backbone is usually moved more gently than the freshly initialised heads). Training state is checkpointed to ``work_dir/state.pt`` after every epoch
and every ``checkpoint_every`` batches, keyed by the config and a digest of the input files: a rerun
with the same inputs resumes, a changed config or input starts afresh. The model and the metrics
are published atomically only when training has finished.

Example (not run here: it needs the pipeline's prepared data and frame store)::

    result = train_visual(read_manifest("cache/prepared/manifest.json"), "cache/prepared/labels.h5",
                          "cache/frames/frames.h5", "cache/visual/model.pt", "metrics/visual.json",
                          "cache/work/finetune-visual", VisualTrainConfig())
    sorted(result.metrics)
    # ['au_thresholds', 'baseline', 'best_epoch', 'epochs', 'frames', 'selection', 'validation']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.config import check_fields, to_dict
from pipeline.data.manifest import Manifest
from pipeline.fsio import file_sha256, write_json
from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA, TASKS
from pipeline.model_files import visual as visual_files
from pipeline.model_files.visual import ExportConfig
from pipeline.model_files.backbone import load_backbone_state
from pipeline.models.multitask import MultiTaskModel, build_model
from pipeline.models.preprocess import to_model_input
from pipeline.train import ddp
from pipeline.train.alternating import ROTATION, TaskSchedule
from pipeline.train.amp import AmpMode, Precision
from pipeline.train.augment import AugmentConfig, augment_batch
from pipeline.train.ddp import DistContext
from pipeline.train.epoch_plan import epoch_plan
from pipeline.train.frames_dataset import (
    FrameDataset,
    FrameSet,
    concat_frame_sets,
    empty_frame_set,
    has_labels,
    read_frame_labels,
    select_frames,
    select_subject_frames,
    select_validation_frames,
)
from pipeline.train.loader import EpochLoader, LoaderConfig
from pipeline.train.loop import (
    TrainResult, Trainer, check_weights, checked_step, frame_set_metrics, run_epochs,
)
from pipeline.train.loop_state import LoopState
from pipeline.train.losses import compute_pos_weight, task_loss
from pipeline.train.optim import OptimConfig, lr_factor
from pipeline.train.selection import (
    SelectionConfig, SelectionSplit, calibrate_au, selection_report, selection_split,
)

log = logging.getLogger(__name__)

SECTION = "finetune_visual"
STATE_FILE = "state.pt"
# What the pipeline predicts for a frame without a face: embed-visual stores zero logits there, i.e.
# sigmoid 0.5 (not > 0.5: no AU active) and the arg-max of a uniform expression (class 0, Neutral),
# and a zero valence and arousal.
NO_FACE_AU, NO_FACE_EXPR, NO_FACE_VA = 0, 0, 0.0
# Which output of MultiTaskModel.forward_head each task trains.
HEAD_OUTPUT: dict[str, int] = {"au": 0, "expr": 1, "va": 2}


@dataclass(frozen=True)
class VisualTrainConfig:
    """The ``finetune_visual`` params section (demo defaults; see docs/visual.md for the paper profile)."""

    backbone: str = "iresnet18"
    width_mult: float = 0.125         # 1.0 for insightface checkpoints; a pretrained file must have this width
    dropout: float = 0.0
    # pretrained: start from the arcface_torch backbone state_dict (.pth) of this backbone and width that
    # the caller hands over (dvc.yaml passes pretrain-face's); random: from random initialisation
    backbone_init: Literal["pretrained", "random"] = "random"
    epochs: int = 5
    batch_size: int = 64              # global batch, split between DDP processes
    lr: float = 0.02
    backbone_lr_mult: float = 1.0     # the backbone learns at lr * this; the task heads at lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_grad_norm: float | None = None                   # None: no gradient clipping
    warmup_epochs: float = 0.0                           # linear warm-up of every group's lr, then the schedule
    schedule: Literal["cosine", "constant"] = "cosine"   # per-batch learning-rate schedule
    alternation: Literal["epoch", "batch"] = "batch"
    focal_gamma: float = 2.0
    focal_alpha: tuple[float, ...] | None = None         # 7 per-class weights, or none
    pos_weight: tuple[float, ...] | None = None          # 12 per-AU weights, or computed from train labels
    pos_weight_cap: float = 10.0
    va_mse_weight: float = 0.0                           # VA loss: 1 - CCC, plus this times the MSE
    use_bp4d: bool = True
    max_frames_per_epoch: int | None = 2048              # per task; a fresh random subset every epoch
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    amp: AmpMode = "off"              # off (float32) | bf16 | fp16 (CUDA only, with loss scaling) autocast
    channels_last: bool = False       # NHWC memory layout of the model and its batches (faster convs on GPUs)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}"),
            (self.width_mult > 0, "width_mult", f"must be > 0, got {self.width_mult}"),
            (self.focal_alpha is None or len(self.focal_alpha) == NUM_EXPRS,
             "focal_alpha", f"needs {NUM_EXPRS} values, got {self.focal_alpha}"),
            (self.pos_weight is None or len(self.pos_weight) == NUM_AUS,
             "pos_weight", f"needs {NUM_AUS} values, got {self.pos_weight}"),
            (self.max_frames_per_epoch is None or self.max_frames_per_epoch >= 1,
             "max_frames_per_epoch", f"must be >= 1 or null, got {self.max_frames_per_epoch}"),
            (math.isfinite(self.backbone_lr_mult) and self.backbone_lr_mult > 0, "backbone_lr_mult",
             f"must be > 0, got {self.backbone_lr_mult}"),
            (math.isfinite(self.va_mse_weight) and self.va_mse_weight >= 0, "va_mse_weight",
             f"must be a number >= 0, got {self.va_mse_weight}"),
            (0.0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
             f"must be in [0, epochs ({self.epochs})], got {self.warmup_epochs}"),
        ]
        check_fields(checks)
        self.optim()

    def optim(self) -> OptimConfig:
        """The shared optimiser and loss block (SGD with momentum)."""
        return OptimConfig.of(self)

    def arch(self) -> dict[str, Any]:
        """The model's arch dict (stored in the checkpoint, read by ``build_model``)."""
        return {"backbone": self.backbone, "width_mult": self.width_mult, "dropout": self.dropout}


@dataclass(frozen=True)
class TrainData:
    """Each task's training frames, and the validation and held-out selection frames of every task.

    ``val`` is the union of every task's validation frames with a face; a frame's labels of a task
    are -1 (NaN for VA) unless its subject is in that task's validation split, so one forward pass
    scores every task. ``val_faceless`` holds the labelled validation frames without a face (labels
    only). ``sel`` and ``sel_faceless`` are the same for the held-out selection subjects (empty
    unless the selection mode is holdout).
    """

    au_train: FrameSet
    expr_train: FrameSet
    val: FrameSet
    val_faceless: FrameSet = field(default_factory=empty_frame_set)
    sel: FrameSet = field(default_factory=empty_frame_set)
    sel_faceless: FrameSet = field(default_factory=empty_frame_set)
    va_train: FrameSet = field(default_factory=empty_frame_set)

    def train(self, task: str) -> FrameSet:
        """The training frames of ``task``."""
        return {"au": self.au_train, "expr": self.expr_train, "va": self.va_train}[task]

    @property
    def has_va(self) -> bool:
        """Whether any training, validation or selection frame carries a VA label."""
        return any(has_labels(part, "va").any() for part in (self.va_train, self.val, self.val_faceless,
                                                               self.sel, self.sel_faceless))

    @property
    def au_val_mask(self) -> np.ndarray:
        """(len(val),) bool: the AU validation frames."""
        return has_labels(self.val, "au")

    @property
    def expr_val_mask(self) -> np.ndarray:
        """(len(val),) bool: the EXPR validation frames."""
        return has_labels(self.val, "expr")

    def sizes(self) -> dict[str, int]:
        """Frame counts (with a face) per set, for logs and the metrics file (the VA counts only
        where the data has VA labels, so a dataset without them reports as before)."""
        sizes = {"au_train": len(self.au_train), "expr_train": len(self.expr_train),
                 "au_val": int(self.au_val_mask.sum()), "expr_val": int(self.expr_val_mask.sum()),
                 "val": len(self.val), "au_selection": int(has_labels(self.sel, "au").sum()),
                 "expr_selection": int(has_labels(self.sel, "expr").sum()), "selection": len(self.sel)}
        if self.has_va:
            sizes.update(va_train=len(self.va_train), va_val=int(has_labels(self.val, "va").sum()),
                         va_selection=int(has_labels(self.sel, "va").sum()))
        return sizes


def build_training_data(manifest: Manifest, labels_path: str | Path, frames_path: str | Path,
                        use_bp4d: bool, held: SelectionSplit | None = None) -> TrainData:
    """Select the training, leakage-free validation and held-out selection frames of every task
    (faces as the frame store has them); ``held`` subjects are selection frames, not training ones.
    VA trains on Aff-Wild2 frames only (BP4D has no VA labels)."""
    held = held or SelectionSplit()
    labels = read_frame_labels(labels_path, frames_path)
    au_sources = ("affwild2", "bp4d") if use_bp4d else ("affwild2",)
    return TrainData(
        au_train=select_frames(manifest, labels, "au", "train", au_sources, exclude=held.subjects["au"]),
        expr_train=select_frames(manifest, labels, "expr", "train", exclude=held.subjects["expr"]),
        va_train=select_frames(manifest, labels, "va", "train", exclude=held.subjects.get("va", ())),
        val=select_validation_frames(manifest, labels),
        val_faceless=select_validation_frames(manifest, labels, face=False),
        sel=select_subject_frames(manifest, labels, held.subjects),
        sel_faceless=select_subject_frames(manifest, labels, held.subjects, face=False),
    )


def baseline_metrics(data: TrainData) -> dict[str, Any]:
    """Trivial predictors on the validation frames (with and without a face): every AU negative;
    the majority training expression; valence and arousal 0 (any constant has a CCC of 0)."""
    majority = int(np.bincount(data.expr_train.expr, minlength=NUM_EXPRS).argmax()) if len(data.expr_train) else 0
    n = len(data.val) + len(data.val_faceless)
    report = score_frames(data.val, data.val_faceless, np.zeros((n, NUM_AUS), np.int8), np.full(n, majority),
                          np.zeros((n, NUM_VA), np.float32))
    return {**report, "expr_majority_class": majority}


def score_frames(faces: FrameSet, faceless: FrameSet, au_pred: np.ndarray, expr_pred: np.ndarray,
                 va_pred: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`~pipeline.train.loop.frame_set_metrics` of predictions for every ``faces`` frame, then
    every ``faceless`` frame (in that order); VA is scored where ``va_pred`` is given and a frame
    carries a VA label."""
    frames = concat_frame_sets([faces, faceless])
    face = np.arange(len(frames)) < len(faces)
    masks = {task: has_labels(frames, task) for task in TASKS}
    va_mask = masks["va"] if va_pred is not None else np.zeros(len(frames), bool)
    return frame_set_metrics(
        (frames.au[masks["au"]], au_pred[masks["au"]], face[masks["au"]]) if masks["au"].any() else None,
        (frames.expr[masks["expr"]], expr_pred[masks["expr"]], face[masks["expr"]]) if masks["expr"].any() else None,
        (frames.va[va_mask], va_pred[va_mask], face[va_mask]) if va_mask.any() else None,
    )


def score_predictions(faces: FrameSet, faceless: FrameSet, au_pred: np.ndarray, expr_pred: np.ndarray,
                      va_pred: np.ndarray | None = None) -> dict[str, Any]:
    """The report of the model's predictions for the ``faces`` frames, the ``faceless`` frames taking
    the no-face prediction (:data:`NO_FACE_AU`, :data:`NO_FACE_EXPR`, :data:`NO_FACE_VA`)."""
    n = len(faceless)
    va = None if va_pred is None else np.concatenate([va_pred, np.full((n, NUM_VA), NO_FACE_VA, np.float32)])
    return score_frames(faces, faceless, np.concatenate([au_pred, np.full((n, NUM_AUS), NO_FACE_AU, np.int8)]),
                        np.concatenate([expr_pred, np.full(n, NO_FACE_EXPR, np.int64)]), va)


def data_key(manifest: Manifest, labels_path: str | Path, frames_path: str | Path,
             pretrained: str | Path | None) -> str:
    """A digest of what the run trains on: the manifest and the inputs' (and pretrained file's) contents."""
    payload = {
        "manifest": dataclasses.asdict(manifest),
        "labels": file_sha256(labels_path),
        "frames": file_sha256(frames_path),
        "pretrained": file_sha256(pretrained) if pretrained and Path(pretrained).is_file() else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class _ActiveHead(nn.Module):
    """Backbone + the output of the one head being trained, so DDP sees the inactive heads as unused
    (only the active output reaches the loss)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        # forward_head keeps the model's own output transform (tanh for VA) in one place
        return self.model.forward_head(self.model.forward_features(x))[HEAD_OUTPUT[task]]


def param_groups(model: MultiTaskModel, backbone_lr_mult: float) -> list[tuple[list[nn.Parameter], float]]:
    """The optimiser's groups ``(params, lr multiplier)``: the backbone at ``backbone_lr_mult``, then
    every other parameter (the task heads) at 1."""
    backbone = list(model.backbone.parameters())
    mine = {id(p) for p in backbone}
    return [(backbone, backbone_lr_mult), ([p for p in model.parameters() if id(p) not in mine], 1.0)]


def predict_frames(
    model: MultiTaskModel, dataset: FrameDataset, offset: int, n: int, batch_size: int,
    device: torch.device, ctx: DistContext, loader_cfg: LoaderConfig = LoaderConfig(),
    precision: Precision | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AU decisions (n,12) int (sigmoid > 0.5), expression argmax (n,) and valence-arousal (n,2)
    float32 for ``dataset[offset:offset+n]``.

    Each process predicts its share; the parts are gathered so every process gets all rows. With a
    ``precision``, the forward pass runs in its autocast and layout, as training does.
    """
    au, _, expr, va = frame_outputs(model, dataset, offset, n, batch_size, device, ctx, loader_cfg, precision)
    return au, expr, va


@torch.no_grad()
def frame_outputs(
    model: MultiTaskModel, dataset: FrameDataset, offset: int, n: int, batch_size: int,
    device: torch.device, ctx: DistContext, loader_cfg: LoaderConfig = LoaderConfig(),
    precision: Precision | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`predict_frames`'s AU decisions, expressions and VA, with the AU logits (n,12) float32
    after the decisions."""
    precision = precision or Precision("off", False, device)
    mine = np.asarray(ddp.shard(np.arange(n), ctx)) + offset
    batches = [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]
    au_parts, logit_parts = [np.zeros((0, NUM_AUS), np.int8)], [np.zeros((0, NUM_AUS), np.float32)]
    expr_parts, va_parts = [np.zeros(0, np.int64)], [np.zeros((0, NUM_VA), np.float32)]
    model.eval()
    loader = DataLoader(dataset, batch_sampler=batches, **loader_cfg.dataloader_kwargs(device))
    for images, _, _ in loader:
        with precision.autocast():
            au_logits, expr_logits, va = model(precision.batch(to_model_input(images, device)))
        # decided by torch as ever, not from the gathered logits: the fixed-0.5 scores keep their bytes
        au_parts.append((torch.sigmoid(au_logits.float()) > 0.5).to(torch.int8).cpu().numpy())
        logit_parts.append(au_logits.float().cpu().numpy())
        expr_parts.append(expr_logits.argmax(dim=1).cpu().numpy())
        va_parts.append(va.float().cpu().numpy())
    return tuple(ddp.unshard(ddp.gather_rows(np.concatenate(parts), ctx), n)
                 for parts in (au_parts, logit_parts, expr_parts, va_parts))


class _VisualRun:
    """One run's model, DDP wrapper, optimiser, schedule and augmentation RNG: what differs from the
    other trainers (data and model); the epoch loop is :func:`pipeline.train.loop.run_epochs`."""

    def __init__(self, cfg: VisualTrainConfig, device: torch.device, ctx: DistContext, total_steps: int,
                 pos_weight: torch.Tensor, loader: LoaderConfig = LoaderConfig(),
                 pretrained: str | Path | None = None) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.precision = Precision(cfg.amp, cfg.channels_last, device, SECTION)
        self.loader = loader
        self.epoch_loader: EpochLoader | None = None
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.arch())
        if pretrained is not None:
            load_backbone_state(self.model.backbone, pretrained)
        self.precision.model(self.model.to(device))
        self.net: nn.Module = _ActiveHead(self.model)
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True,
            )
        self.heads = {"au": self.model.au_head, "expr": self.model.expr_head, "va": self.model.va_head}
        self.optimizer = cfg.optim().build_groups(param_groups(self.model, cfg.backbone_lr_mult))
        warmup_steps = round(cfg.warmup_epochs * total_steps / cfg.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(total_steps, warmup_steps, cfg.schedule))
        self.augment_rng = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)
        self.pos_weight = pos_weight.to(device)
        self.alpha = None if cfg.focal_alpha is None else torch.tensor(cfg.focal_alpha, device=device)

    def step(self, task: str, images: torch.Tensor, targets: torch.Tensor, epoch: int, batch: int) -> float:
        """Augment, forward the active head, one checked optimiser step and a schedule step; return the loss.

        ``targets`` are the active task's labels of the batch; ``epoch`` and ``batch`` (from 1)
        name the step in a divergence error."""
        x = to_model_input(augment_batch(images.to(self.device), self.cfg.augment, self.augment_rng))
        with self.precision.autocast():
            logits = self.net(self.precision.batch(x), task)
            loss = task_loss(task, logits, targets.to(self.device), self.pos_weight, self.cfg.focal_gamma,
                             self.alpha, va_mse_weight=self.cfg.va_mse_weight)
        value = checked_step(self.net, self.optimizer, task, loss, SECTION, epoch, batch, heads=self.heads,
                             max_grad_norm=self.cfg.max_grad_norm, ctx=self.ctx, scaler=self.precision.scaler)
        self.scheduler.step()
        return value

    def train_epoch(self, loop: LoopState, epoch: int, plan: list[tuple[str, np.ndarray]], dataset: FrameDataset,
                    offsets: dict[str, int], checkpoint_every: int, progress: bool) -> dict[str, list[float]]:
        """The batches of ``plan`` from ``loop.batch`` on, checkpointing every ``checkpoint_every``."""
        cfg, ctx = self.cfg, self.ctx
        batches = [ddp.shard(idx + offsets[f"{task}_train"], ctx).tolist() for task, idx in plan[loop.batch:]]
        loader = self._epoch_loader(dataset).epoch(batches)
        va_labels = dataset.frame_set.va   # the loader serves AU and EXPR labels; VA is read by index
        self.net.train()
        bar = tqdm(total=len(plan), initial=loop.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not (progress and ctx.is_main), mininterval=1.0)
        losses: dict[str, list[float]] = {t: [] for t, _ in plan}
        for (task, _), rows, (images, au, expr) in zip(plan[loop.batch:], batches, loader):
            targets = torch.from_numpy(va_labels[rows]) if task == "va" else (au if task == "au" else expr)
            losses[task].append(self.step(task, images, targets, epoch + 1, loop.batch + 1))
            loop.batch += 1
            bar.update(1)
            bar.set_postfix({t: f"{np.mean(v[-20:]):.3f}" for t, v in losses.items() if v}, refresh=False)
            if checkpoint_every and loop.batch % checkpoint_every == 0 and loop.batch < len(plan):
                check_weights(self.model, SECTION, epoch + 1, loop.batch, cfg.max_grad_norm)
                loop.save(self.model, self.optimizer, self.extra_state())
        bar.close()
        ddp.sync_buffers(self.model, ctx)  # each rank's last batch moved its own BatchNorm statistics
        return losses

    def _epoch_loader(self, dataset: Dataset) -> EpochLoader:
        """The training loader over ``dataset``, built once (its workers may persist across epochs)."""
        if self.epoch_loader is None or self.epoch_loader.dataset is not dataset:
            self.epoch_loader = EpochLoader(dataset, self.loader, self.device)
        return self.epoch_loader

    def extra_state(self) -> dict[str, Any]:
        """The schedule, the fp16 loss scale and every rank's augmentation RNG (a collective call under DDP)."""
        extra = {"scheduler": self.scheduler.state_dict(),
                 "augment_rng": ddp.gather_tensors(self.augment_rng.get_state(), self.ctx)}
        if self.precision.scaler is not None:  # only then: an amp-off state stays as it was
            extra["grad_scaler"] = self.precision.state_dict()
        return extra

    def load_extra(self, extra: Mapping[str, Any] | None) -> None:
        """Restore :meth:`extra_state` (with another process count, extra ranks reuse the last RNG state)."""
        if extra is None:
            return
        self.scheduler.load_state_dict(extra["scheduler"])
        self.precision.load_state_dict(extra.get("grad_scaler"))
        rngs = extra["augment_rng"]
        self.augment_rng.set_state(rngs[min(self.ctx.rank, len(rngs) - 1)])


class _VisualTrainer(Trainer):
    """The run's steps over each epoch's plan, scored on the validation and the held-out frames."""

    def __init__(self, run: _VisualRun, plans: list[list[tuple[str, np.ndarray]]], dataset: FrameDataset,
                 offsets: dict[str, int], data: TrainData, checkpoint_every: int, progress: bool) -> None:
        self.run, self.model, self.optimizer = run, run.model, run.optimizer
        self.plans, self.dataset, self.offsets, self.data = plans, dataset, offsets, data
        self.checkpoint_every, self.progress = checkpoint_every, progress

    def fit_epoch(self, loop: LoopState, epoch: int) -> dict[str, list[float]]:
        """The epoch's plan from ``loop.batch`` on."""
        return self.run.train_epoch(loop, epoch, self.plans[epoch], self.dataset, self.offsets,
                                    self.checkpoint_every, self.progress)

    def validate(self) -> dict[str, Any]:
        """The report on the validation frames."""
        return self._score("val", self.data.val, self.data.val_faceless)

    def select(self) -> dict[str, Any]:
        """The report on the held-out selection frames."""
        return self._score("sel", self.data.sel, self.data.sel_faceless)

    def extra_state(self) -> dict[str, Any]:
        """The run's schedule, loss scale and augmentation RNGs."""
        return self.run.extra_state()

    def held_out_au(self) -> tuple[np.ndarray, np.ndarray]:
        """AU logits and labels (both (n,12)) of the held-out selection frames with a face."""
        run, n = self.run, len(self.data.sel)
        _, logits, _, _ = frame_outputs(run.model, self.dataset, self.offsets["sel"], n, run.cfg.batch_size,
                                        run.device, run.ctx, run.loader, run.precision)
        return logits, self.data.sel.au

    def _score(self, part: str, faces: FrameSet, faceless: FrameSet) -> dict[str, Any]:
        run = self.run
        predictions = predict_frames(run.model, self.dataset, self.offsets[part], len(faces), run.cfg.batch_size,
                                        run.device, run.ctx, run.loader, run.precision)
        return score_predictions(faces, faceless, *predictions)


def train_visual(
    manifest: Manifest,
    labels_path: str | Path,
    frames_path: str | Path,
    out_model: str | Path,
    metrics_path: str | Path,
    work_dir: str | Path,
    cfg: VisualTrainConfig,
    device: torch.device | str = "cpu",
    loader: LoaderConfig = LoaderConfig(),
    dist: DistContext | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
    selection: SelectionConfig | None = None,
    pretrained: str | Path | None = None,
    onnx_path: str | Path | None = None,
    export: ExportConfig = ExportConfig(),
) -> TrainResult:
    """Fine-tune the multi-task visual model; publish the kept epoch's model and the metrics JSON.

    With ``onnx_path``, the kept model is also exported there (``visual.onnx``) with its int8 copy
    calibrated on ``frames_path`` (:func:`pipeline.model_files.visual.publish_onnx`, ``export``).

    Under DDP (``dist`` with several processes, process group already initialised) every process
    calls this; only rank 0 writes files. ``checkpoint_every`` (batches) adds mid-epoch checkpoints
    (0 = only at epoch ends). ``selection`` (default: holdout) says how the kept epoch is chosen.
    ``loader`` says how batches are fed (speed only). ``pretrained`` is the backbone file the run
    starts from when ``cfg.backbone_init`` is ``pretrained`` (it must then be given); with ``random``
    it is not read.
    """
    if cfg.backbone_init == "pretrained" and pretrained is None:
        raise ValueError(f"{SECTION}.backbone_init is pretrained but no pretrained backbone file was given "
                         "(--pretrained); give one, or set backbone_init: random")
    pretrained = pretrained if cfg.backbone_init == "pretrained" else None
    ctx, device = dist or DistContext(), torch.device(device)
    selection = selection or SelectionConfig()
    held = selection_split(manifest, selection)
    data = build_training_data(manifest, labels_path, frames_path, cfg.use_bp4d, held)
    tasks = _check_data(data, labels_path, cfg, ctx, selection)
    # One dataset over the five sets; each set is an index range of it.
    parts = {"au_train": data.au_train, "expr_train": data.expr_train, "va_train": data.va_train, "val": data.val,
             "sel": data.sel}
    offsets = dict(zip(parts, np.cumsum([0] + [len(p) for p in parts.values()])[:-1].tolist()))
    dataset = FrameDataset(frames_path, concat_frame_sets(list(parts.values())))
    sizes = {task: len(data.train(task)) for task in tasks}
    plans = [epoch_plan(TaskSchedule(cfg.alternation, tasks), e, sizes, cfg.batch_size, cfg.seed,
                        cfg.max_frames_per_epoch, min_batch=2 * ctx.world_size) for e in range(cfg.epochs)]
    run = _VisualRun(cfg, device, ctx, sum(len(p) for p in plans), _pos_weight(cfg, data), loader, pretrained)
    key = {"config": to_dict(cfg), "selection": selection.resume_key(), "data": ddp.broadcast_digest(
        data_key(manifest, labels_path, frames_path, pretrained) if ctx.is_main else None, ctx)}
    loop = LoopState.resume(Path(work_dir) / STATE_FILE, key, run.model, run.optimizer, writer=ctx.is_main)
    run.load_extra(loop.extra)
    if ctx.is_main:
        log.info("frames: %s; state %s", data.sizes(), loop.path)
        if loop.resumed_from is not None:
            log.info("resuming from epoch %d batch %d (of %d epochs)", loop.epoch + 1, loop.batch, cfg.epochs)

    trainer = _VisualTrainer(run, plans, dataset, offsets, data, checkpoint_every, progress)
    best = run_epochs(loop, SECTION, cfg.epochs, trainer, cfg.max_grad_norm, mode=selection.mode)
    thresholds = calibrate_au(selection, *trainer.held_out_au())
    metrics = {"validation": best["metrics"], "baseline": baseline_metrics(data), "epochs": cfg.epochs,
               "best_epoch": best["epoch"], "selection": selection_report(selection, held, loop.history),
               "frames": data.sizes(), AU_THRESHOLDS: thresholds.record()}
    run.precision.standard_layout(run.model)
    if ctx.is_main:
        log.info("AU thresholds: %s", thresholds.describe())
        _publish(run.model, cfg, best["epoch"], out_model, metrics, metrics_path,
                 None if onnx_path is None else (onnx_path, frames_path, export))
    ddp.barrier(ctx)
    return TrainResult(run.model, metrics, best["epoch"], loop.history, loop.resumed_from)


def _pos_weight(cfg: VisualTrainConfig, data: TrainData) -> torch.Tensor:
    """The configured per-AU ``pos_weight``, or negatives/positives of the AU training labels."""
    if cfg.pos_weight is not None:
        return torch.tensor(cfg.pos_weight, dtype=torch.float32)
    return compute_pos_weight(data.au_train.au, cfg.pos_weight_cap)


def _check_data(data: TrainData, labels_path: str | Path, cfg: VisualTrainConfig, ctx: DistContext,
                selection: SelectionConfig) -> tuple[str, ...]:
    """The tasks that have training frames, in :data:`pipeline.train.alternating.ROTATION` order
    (expression first, as the paper); errors for unusable data. A task without training frames is skipped; for VA, which a dataset may
    not annotate at all, one INFO line says so."""
    sizes = data.sizes()
    tasks = tuple(t for t in ROTATION if len(data.train(t)) > 0)
    if not tasks:
        raise ValueError(f"{labels_path}: no face frame carries a training label of any task")
    if "va" not in tasks and ctx.is_main:
        log.info("%s: no training face frame carries a valence-arousal label; the va head is not trained",
                 labels_path)
    if sizes["val"] == 0:
        raise ValueError(f"{labels_path}: no validation subject has a labelled face frame; nothing to report")
    if selection.mode == "holdout" and sizes["selection"] == 0:
        raise ValueError(f"{labels_path}: no held-out selection subject has a labelled face frame; raise "
                         f"selection.share (now {selection.share}) or set selection.mode to validation or last")
    if cfg.batch_size < 2 * ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is too small for {ctx.world_size} processes "
                         f"(BatchNorm needs >= 2 frames per process)")
    return tasks


def _publish(model: MultiTaskModel, cfg: VisualTrainConfig, best_epoch: int, out_model: str | Path,
             metrics: dict[str, Any], metrics_path: str | Path,
             onnx: tuple[str | Path, str | Path, ExportConfig] | None = None) -> None:
    """Write the best epoch's model (loaded in ``model``), its ONNX export and int8 copy when ``onnx``
    (path, calibration frames, config) is given, and then the metrics, each atomically."""
    visual_files.save_checkpoint(out_model, model, cfg.arch(), {"epoch": best_epoch,
                                                                 AU_THRESHOLDS: metrics[AU_THRESHOLDS]})
    if onnx is not None:
        visual_files.publish_onnx(out_model, *onnx)
    write_json(metrics_path, metrics)
    log.info("published %s and %s (kept epoch %d, validation score on face frames %.4f)", out_model,
             metrics_path, metrics["best_epoch"], metrics["validation"]["face_frames"]["score"])
