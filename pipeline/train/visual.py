"""Fine-tuning of the multi-task visual model (paper §3.1, §4.2): the ``finetune-visual`` stage.

A (pretrained) IResNet backbone with an AU head and an expression head is trained on face frames
that carry AU labels (Aff-Wild2 train, plus BP4D when ``use_bp4d``) or expression labels, the two
heads updated in rotation (:mod:`pipeline.train.alternating`): AU head by BCE with per-AU
``pos_weight``, expression head by focal loss. After every epoch the model is scored with the ABAW
metrics on the leakage-free validation sets (AU: sigmoid > 0.5; EXPR: argmax) and the epoch with the
best mean of the AU and EXPR scores is kept.

Training state is checkpointed to ``work_dir/<key>/`` after every epoch and every
``checkpoint_every`` batches, where ``<key>`` hashes the config and the input files: a rerun with
the same inputs resumes, a changed config starts afresh. The model and the metrics are published
atomically only when training has finished.

Example (not run here: it needs the pipeline's prepared data and frame store)::

    result = train_visual(read_manifest("cache/prepared/manifest.json"), "cache/prepared/labels.h5",
                          "cache/frames/frames.h5", "cache/visual/model.pt", "metrics/visual.json",
                          "cache/work/finetune-visual", VisualTrainConfig())
    sorted(result.metrics)
    # ['au', 'baseline', 'best_epoch', 'epochs', 'expr', 'frames', 'score']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.config import ConfigError, to_dict
from pipeline.data.manifest import Manifest
from pipeline.fsio import atomic_path, file_sha256, write_json
from pipeline.labels import NUM_AUS, NUM_EXPRS
from pipeline.metrics import au_metrics, expr_metrics
from pipeline.models.multitask import MultiTaskModel, build_model, checkpoint_dict, load_pretrained_backbone
from pipeline.models.preprocess import to_model_input
from pipeline.train import ddp
from pipeline.train.alternating import TaskSchedule, multitask_step
from pipeline.train.augment import AugmentConfig, augment_batch
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.train.ddp import DistContext
from pipeline.train.epoch_plan import epoch_plan
from pipeline.train.frames_dataset import (
    FrameDataset,
    FrameSet,
    concat_frame_sets,
    has_labels,
    read_frame_labels,
    select_frames,
    select_validation_frames,
)
from pipeline.train.losses import au_bce_loss, compute_pos_weight, expr_focal_loss

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best.pt"
_KEY_PATTERN = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class VisualTrainConfig:
    """The ``finetune_visual`` params section (demo defaults; see docs/visual.md for the paper profile)."""

    backbone: str = "iresnet18"
    width_mult: float = 0.125         # 1.0 for insightface checkpoints; smaller = faster, not loadable
    dropout: float = 0.0
    pretrained: str | None = None     # arcface_torch backbone state_dict (.pth); needs width_mult 1
    epochs: int = 5
    batch_size: int = 64              # global batch, split between DDP processes
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"   # per-batch learning-rate schedule
    alternation: Literal["epoch", "batch"] = "batch"
    focal_gamma: float = 2.0
    focal_alpha: tuple[float, ...] | None = None         # 7 per-class weights, or none
    pos_weight: tuple[float, ...] | None = None          # 12 per-AU weights, or computed from train labels
    pos_weight_cap: float = 10.0
    use_bp4d: bool = True
    max_frames_per_epoch: int | None = 2048              # per task; a fresh random subset every epoch
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}"),
            (self.lr > 0, "lr", f"must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}"),
            (self.width_mult > 0, "width_mult", f"must be > 0, got {self.width_mult}"),
            (self.focal_alpha is None or len(self.focal_alpha) == NUM_EXPRS,
             "focal_alpha", f"needs {NUM_EXPRS} values, got {self.focal_alpha}"),
            (self.pos_weight is None or len(self.pos_weight) == NUM_AUS,
             "pos_weight", f"needs {NUM_AUS} values, got {self.pos_weight}"),
            (self.max_frames_per_epoch is None or self.max_frames_per_epoch >= 1,
             "max_frames_per_epoch", f"must be >= 1 or null, got {self.max_frames_per_epoch}"),
            (self.pretrained is None or self.width_mult == 1.0,
             "width_mult", f"must be 1.0 with a pretrained backbone (insightface layout), got {self.width_mult}"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(message, key=key)

    def arch(self) -> dict[str, Any]:
        """The model's arch dict (stored in the checkpoint, read by ``build_model``)."""
        return {"backbone": self.backbone, "width_mult": self.width_mult, "dropout": self.dropout}


@dataclass(frozen=True)
class TrainData:
    """Each task's training frames and the validation frames of both tasks (one set, see below).

    ``val`` is the union of the AU and EXPR validation frames; a frame's labels of a task are -1
    unless its subject is in that task's validation split, so one forward pass scores both tasks.
    """

    au_train: FrameSet
    expr_train: FrameSet
    val: FrameSet

    @property
    def au_val_mask(self) -> np.ndarray:
        """(len(val),) bool: the AU validation frames."""
        return has_labels(self.val, "au")

    @property
    def expr_val_mask(self) -> np.ndarray:
        """(len(val),) bool: the EXPR validation frames."""
        return has_labels(self.val, "expr")

    def sizes(self) -> dict[str, int]:
        """Frame counts per set, for logs and the metrics file."""
        return {"au_train": len(self.au_train), "expr_train": len(self.expr_train),
                "au_val": int(self.au_val_mask.sum()), "expr_val": int(self.expr_val_mask.sum()),
                "val": len(self.val)}


@dataclass
class VisualTrainResult:
    """What :func:`train_visual` returns on every process."""

    metrics: dict[str, Any]           # the metrics file's content
    model: MultiTaskModel             # the weights after the last epoch (the published model is the best epoch)
    work_dir: Path                    # this config's checkpoint directory
    resumed_from: tuple[int, int] | None  # (epoch, batch) the run continued from, 0-based, or None


def build_training_data(manifest: Manifest, labels_path: str | Path, frames_path: str | Path,
                        use_bp4d: bool) -> TrainData:
    """Select the training and leakage-free validation frames of both tasks (faces as the frame store has them)."""
    labels = read_frame_labels(labels_path, frames_path)
    au_sources = ("affwild2", "bp4d") if use_bp4d else ("affwild2",)
    return TrainData(
        au_train=select_frames(manifest, labels, "au", "train", au_sources),
        expr_train=select_frames(manifest, labels, "expr", "train"),
        val=select_validation_frames(manifest, labels),
    )


def baseline_metrics(data: TrainData) -> dict[str, Any]:
    """Trivial predictors on the validation sets: every AU negative; the majority training expression."""
    n = len(data.val)
    majority = int(np.bincount(data.expr_train.expr, minlength=NUM_EXPRS).argmax()) if len(data.expr_train) else 0
    out = score_predictions(data, np.zeros((n, NUM_AUS), np.int8), np.full(n, majority))
    out["expr_majority_class"] = majority
    return out


def score_predictions(data: TrainData, au_pred: np.ndarray, expr_pred: np.ndarray) -> dict[str, Any]:
    """ABAW AU and EXPR metrics of predictions for every ``data.val`` frame, and their mean ``score``."""
    au_mask, expr_mask = data.au_val_mask, data.expr_val_mask
    out: dict[str, Any] = {
        "au": au_metrics(data.val.au[au_mask], au_pred[au_mask]) if au_mask.any() else None,
        "expr": expr_metrics(data.val.expr[expr_mask], expr_pred[expr_mask]) if expr_mask.any() else None,
    }
    out["score"] = combined_score(out["au"], out["expr"])
    return out


def combined_score(au: Mapping[str, float] | None, expr: Mapping[str, float] | None) -> float:
    """Model selection score: mean of the ABAW AU and EXPR scores (of the tasks that have validation frames)."""
    scores = [m["score"] for m in (au, expr) if m is not None]
    if not scores:
        raise ValueError("no validation frames for either task: cannot score the model")
    return float(np.mean(scores))


def work_key(cfg: VisualTrainConfig, manifest: Manifest, labels_path: str | Path, frames_path: str | Path) -> str:
    """16 hex digits identifying this training run: the config and the inputs' (and pretrained file's) contents."""
    payload = {
        "config": to_dict(cfg),
        "manifest": dataclasses.asdict(manifest),
        "labels": file_sha256(labels_path),
        "frames": file_sha256(frames_path),
        "pretrained": file_sha256(cfg.pretrained) if cfg.pretrained and Path(cfg.pretrained).is_file() else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class _ActiveHead(nn.Module):
    """Backbone + the one head being trained, so DDP sees the inactive head as unused."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        head = self.model.au_head if task == "au" else self.model.expr_head
        return head(self.model.forward_features(x))


def _lr_lambda(schedule: str, total_steps: int):
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _remove_stale_work_dirs(work_root: Path, keep: str) -> None:
    """Delete checkpoint directories of other configs/inputs (they can never be resumed by this run)."""
    if not work_root.is_dir():
        return
    for child in work_root.iterdir():
        if child.is_dir() and child.name != keep and _KEY_PATTERN.match(child.name):
            log.info("removing stale training state %s (another config or input)", child)
            shutil.rmtree(child)


@torch.no_grad()
def predict_frames(
    model: MultiTaskModel, dataset: FrameDataset, offset: int, n: int, batch_size: int,
    device: torch.device, ctx: DistContext, num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """AU decisions (n,12) int (sigmoid > 0.5) and expression argmax (n,) for ``dataset[offset:offset+n]``.

    Each process predicts its share; the parts are gathered so every process gets all rows.
    """
    mine = np.asarray(ddp.shard(np.arange(n), ctx)) + offset
    batches = [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]
    au_parts, expr_parts = [np.zeros((0, NUM_AUS), np.int8)], [np.zeros(0, np.int64)]
    model.eval()
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    for images, _, _ in loader:
        au_logits, expr_logits = model(to_model_input(images, device))
        au_parts.append((torch.sigmoid(au_logits.float()) > 0.5).to(torch.int8).cpu().numpy())
        expr_parts.append(expr_logits.argmax(dim=1).cpu().numpy())
    au_all = ddp.unshard(ddp.gather_objects(np.concatenate(au_parts), ctx), n)
    expr_all = ddp.unshard(ddp.gather_objects(np.concatenate(expr_parts), ctx), n)
    return au_all, expr_all


class _Trainer:
    """One run's model, DDP wrapper, optimiser, schedule and augmentation RNG, and their saved state."""

    def __init__(self, cfg: VisualTrainConfig, device: torch.device, ctx: DistContext, total_steps: int,
                 pos_weight: torch.Tensor) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.arch())
        if cfg.pretrained is not None:
            load_pretrained_backbone(self.model, cfg.pretrained)
        self.model.to(device)
        self.net: nn.Module = _ActiveHead(self.model)
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True,
            )
        self.heads = {"au": self.model.au_head, "expr": self.model.expr_head}
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg.schedule, total_steps))
        self.augment_rng = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)
        self.pos_weight = pos_weight.to(device)
        self.alpha = None if cfg.focal_alpha is None else torch.tensor(cfg.focal_alpha, device=device)

    def step(self, task: str, images: torch.Tensor, au: torch.Tensor, expr: torch.Tensor) -> float:
        """Augment, forward the active head, one optimiser and schedule step; return the loss."""
        x = to_model_input(augment_batch(images.to(self.device), self.cfg.augment, self.augment_rng))
        logits = self.net(x, task)
        if task == "au":
            loss = au_bce_loss(logits, au.to(self.device), self.pos_weight)
        else:
            loss = expr_focal_loss(logits, expr.to(self.device), self.cfg.focal_gamma, self.alpha)
        value = float(multitask_step(self.net, self.optimizer, task, loss, heads=self.heads))
        self.scheduler.step()
        return value

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (a collective call under DDP)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": _rng_state(),
            "augment_rng": ddp.gather_objects(self.augment_rng.get_state(), self.ctx),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` (with another process count, extra ranks reuse the last RNG state)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        rngs = state["augment_rng"]
        self.augment_rng.set_state(rngs[min(self.ctx.rank, len(rngs) - 1)])


@dataclass
class _Progress:
    """Where the run stands: the next epoch and batch, and the per-epoch validation results."""

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def train_visual(
    manifest: Manifest,
    labels_path: str | Path,
    frames_path: str | Path,
    out_model: str | Path,
    metrics_path: str | Path,
    work_dir: str | Path,
    cfg: VisualTrainConfig,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    dist: DistContext | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> VisualTrainResult:
    """Fine-tune the multi-task visual model; publish the best epoch's model and the metrics JSON.

    Under DDP (``dist`` with several processes, process group already initialised) every process
    calls this; only rank 0 writes files. ``checkpoint_every`` (batches) adds mid-epoch checkpoints
    (0 = only at epoch ends).
    """
    ctx = dist or DistContext()
    device = torch.device(device)
    data = build_training_data(manifest, labels_path, frames_path, cfg.use_bp4d)
    tasks = _check_data(data, labels_path, cfg, ctx)
    schedule = TaskSchedule(cfg.alternation, tasks)
    # One dataset over the three sets; each set is an index range of it.
    parts = {"au_train": data.au_train, "expr_train": data.expr_train, "val": data.val}
    offsets = dict(zip(parts, np.cumsum([0] + [len(p) for p in parts.values()])[:-1].tolist()))
    dataset = FrameDataset(frames_path, concat_frame_sets(list(parts.values())))
    run_dir = _run_dir(work_dir, cfg, manifest, labels_path, frames_path, ctx)
    if ctx.is_main:
        log.info("frames: %s; work dir %s", data.sizes(), run_dir)

    train_sizes = {"au": len(data.au_train), "expr": len(data.expr_train)}
    plans = [epoch_plan(schedule, e, train_sizes, cfg.batch_size, cfg.seed, cfg.max_frames_per_epoch,
                        min_batch=2 * ctx.world_size) for e in range(cfg.epochs)]
    pos_weight = (torch.tensor(cfg.pos_weight, dtype=torch.float32) if cfg.pos_weight is not None
                  else compute_pos_weight(data.au_train.au, cfg.pos_weight_cap))
    trainer = _Trainer(cfg, device, ctx, sum(len(p) for p in plans), pos_weight)

    run = _Progress()
    state = load_checkpoint(run_dir / STATE_FILE, "training state", missing_ok=True)
    resumed_from = None
    if state is not None:
        trainer.load(state)
        run = _Progress(state["epoch"], state["batch"], state["history"], state["best"])
        resumed_from = (run.epoch, run.batch)
        if ctx.is_main:
            log.info("resuming from epoch %d batch %d (of %d epochs) from %s", run.epoch + 1, run.batch,
                     cfg.epochs, run_dir / STATE_FILE)

    def save_state() -> None:
        payload = {**trainer.state(), **dataclasses.asdict(run)}
        if ctx.is_main:
            save_checkpoint(run_dir / STATE_FILE, payload)

    while run.epoch < cfg.epochs:
        label = schedule.task_for_epoch(run.epoch) if cfg.alternation == "epoch" else "+".join(tasks)
        plan = plans[run.epoch]
        batches = [ddp.shard(idx + offsets[f"{task}_train"], ctx).tolist() for task, idx in plan[run.batch:]]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        trainer.net.train()
        bar = tqdm(total=len(plan), initial=run.batch, desc=f"epoch {run.epoch + 1}/{cfg.epochs} ({label})",
                   unit="batch", disable=not (progress and ctx.is_main), mininterval=1.0)
        losses: dict[str, list[float]] = {t: [] for t in tasks}
        for (task, _), (images, au, expr) in zip(plan[run.batch:], loader):
            losses[task].append(trainer.step(task, images, au, expr))
            run.batch += 1
            bar.update(1)
            bar.set_postfix({t: f"{np.mean(v[-20:]):.3f}" for t, v in losses.items() if v}, refresh=False)
            if checkpoint_every and run.batch % checkpoint_every == 0 and run.batch < len(plan):
                save_state()
        bar.close()
        ddp.sync_buffers(trainer.model, ctx)  # each rank's last batch moved its own BatchNorm statistics

        val = score_predictions(data, *predict_frames(trainer.model, dataset, offsets["val"], len(data.val),
                                                      cfg.batch_size, device, ctx, num_workers))
        train_loss = {t: float(np.mean(v)) for t, v in losses.items() if v}
        run.history.append({"epoch": run.epoch + 1, "train_loss": train_loss, **val})
        improved = run.best is None or val["score"] > run.best["score"]
        if improved:
            run.best = {"epoch": run.epoch + 1, **val}
            if ctx.is_main:
                save_checkpoint(run_dir / BEST_FILE,
                                checkpoint_dict(trainer.model, cfg.arch(), {"epoch": run.epoch + 1}))
        if ctx.is_main:
            log.info("epoch %d/%d (%s): loss %s | val AU %s EXPR %s score %.4f%s", run.epoch + 1, cfg.epochs,
                     label, {t: round(v, 4) for t, v in train_loss.items()}, _fmt(val["au"]), _fmt(val["expr"]),
                     val["score"], " (best)" if improved else "")
        run.epoch, run.batch = run.epoch + 1, 0
        save_state()

    if run.best is None:
        raise ValueError(f"{run_dir / STATE_FILE}: a finished run without a best epoch; delete {run_dir}")
    metrics = {
        "au": run.best["au"], "expr": run.best["expr"], "score": run.best["score"],
        "baseline": baseline_metrics(data), "epochs": cfg.epochs, "best_epoch": run.best["epoch"],
        "frames": data.sizes(),
    }
    if ctx.is_main:
        _publish(run_dir / BEST_FILE, out_model, metrics, metrics_path)
    ddp.barrier(ctx)
    return VisualTrainResult(metrics=metrics, model=trainer.model.eval(), work_dir=run_dir,
                             resumed_from=resumed_from)


def _check_data(data: TrainData, labels_path: str | Path, cfg: VisualTrainConfig, ctx: DistContext) -> tuple[str, ...]:
    """The tasks that have training frames (expression first, as the paper); errors for unusable data."""
    sizes = data.sizes()
    tasks = tuple(t for t in ("expr", "au") if sizes[f"{t}_train"] > 0)
    if not tasks:
        raise ValueError(f"{labels_path}: no face frame carries a training label of either task")
    if sizes["val"] == 0:
        raise ValueError(f"{labels_path}: no validation subject has a labelled face frame; "
                         f"cannot select the best epoch")
    if cfg.batch_size < 2 * ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is too small for {ctx.world_size} processes "
                         f"(BatchNorm needs >= 2 frames per process)")
    return tasks


def _run_dir(work_dir: str | Path, cfg: VisualTrainConfig, manifest: Manifest, labels_path: str | Path,
             frames_path: str | Path, ctx: DistContext) -> Path:
    """``work_dir/<key>`` of this config and these inputs (created by rank 0; stale keys removed)."""
    key = ddp.broadcast(work_key(cfg, manifest, labels_path, frames_path) if ctx.is_main else None, ctx)
    run_dir = Path(work_dir) / key
    if ctx.is_main:
        _remove_stale_work_dirs(Path(work_dir), key)
        run_dir.mkdir(parents=True, exist_ok=True)
    ddp.barrier(ctx)
    return run_dir


def _publish(best_path: Path, out_model: str | Path, metrics: dict[str, Any], metrics_path: str | Path) -> None:
    """Write the best epoch's model and then the metrics, each atomically."""
    best = load_checkpoint(best_path, "best epoch's model", missing_ok=True)
    if best is None:
        raise FileNotFoundError(f"{best_path}: the best epoch's model is missing; delete {best_path.parent} "
                                f"to train again")
    with atomic_path(out_model) as tmp:
        torch.save(best, tmp)
    write_json(metrics_path, metrics)
    log.info("published %s and %s (best epoch %d, score %.4f)", out_model, metrics_path,
             metrics["best_epoch"], metrics["score"])


def _fmt(m: Mapping[str, float] | None) -> str:
    return "-" if m is None else f"{m['score']:.4f} (f1 {m['f1']:.3f} acc {m['acc']:.3f})"
