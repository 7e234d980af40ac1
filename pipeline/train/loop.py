"""The epoch loop every trainer shares: train, check, validate, select, save; and its guards.

Pretraining, visual, audio and sequence training differ in their data and model, not in their loop.
Each is a :class:`Trainer` (the one shape, after speechbrain's ``Brain``, kept small): it owns its
``model``, ``optimizer``, data and steps, and :func:`run_epochs` drives it. ``fit_epoch(loop, epoch)``
runs the batches of the 0-based epoch ``epoch`` from ``loop.batch`` on (each one a
:func:`checked_step`) and returns each task's batch losses; ``validate()`` returns the validation
report (:func:`frame_set_metrics`: the ABAW metrics on ``face_frames`` and on ``all_frames``); with the
``holdout`` selection mode, ``select()`` returns the same report on the held-out training subjects;
``extra_state()`` is what a saved state holds beyond the weights and optimiser. A report holds an entry
per task that has labelled frames (``au``, ``expr``, ``va``); a task without any is left out, and the
selection score is the mean of the scores of the tasks present. The loop checks that
the weights are finite, scores the epoch (:func:`pipeline.train.selection.epoch_score`), keeps the best
one (:class:`LoopState`) and saves the state; at the end the kept epoch's weights are loaded into the model.

A diverged run is never published: :func:`check_loss` (after every batch, in :func:`checked_step`)
and :func:`check_weights` (before every saved state and validation) raise :class:`DivergedError`,
naming the stage, the epoch and batch, and what to try.

Example:
    >>> selection_score({"au": {"score": 0.5}, "expr": {"score": 0.25}})
    0.375
    >>> face = np.array([True, False])
    >>> report = frame_set_metrics(None, (np.array([3, 3]), np.array([3, 0]), face))
    >>> report["face_frames"]["expr"]["acc"], report["all_frames"]["expr"]["acc"], report["all_frames"]["frames"]
    (1.0, 0.5, {'au': 0, 'expr': 2})
    >>> try:
    ...     check_loss(float("nan"), "train_x", epoch=2, batch=7, task="au")
    ... except DivergedError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    train_x: training diverged at epoch 2, batch 7: the au loss is nan; nothing was published. Try a lower ...
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.metrics import au_metrics, expr_metrics, va_metrics
from pipeline.train import ddp
from pipeline.train.alternating import multitask_step
from pipeline.train.ddp import DistContext
from pipeline.train.loop_state import EpochRecord, LoopState
from pipeline.train.selection import Mode, criterion_score, epoch_score

log = logging.getLogger(__name__)

TaskLabels = tuple[np.ndarray, np.ndarray]   # (y_true, y_pred) of one task
FacedLabels = tuple[np.ndarray, np.ndarray, np.ndarray]   # (y_true, y_pred, face_present) of one task
FRAME_SETS: tuple[str, ...] = ("face_frames", "all_frames")
# How a model output (au, expr, va: the columns of its outputs) becomes the predictions a task scores.
_DECISIONS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], type]] = {
    0: (lambda logits: logits > 0, np.int64),                # AU: logit > 0 (sigmoid > 0.5)
    1: (lambda logits: logits.argmax(axis=1), np.int64),     # expression: arg-max
    2: (lambda values: values, np.float32),                  # valence-arousal: the values themselves
}


@dataclass
class TrainResult:
    """What every trainer returns: the best epoch's model (eval mode), the metrics file's content,
    the best epoch's number, the per-epoch records and the ``(epoch, batch)`` position the run
    resumed from (or ``None``)."""

    model: nn.Module
    metrics: dict[str, Any]
    best_epoch: int
    history: list[dict[str, Any]]
    resumed_from: tuple[int, int] | None


class DivergedError(ValueError):
    """Training produced a non-finite loss or non-finite weights."""


def _advice(section: str, max_grad_norm: float | None) -> str:
    clip = (f"set {section}.max_grad_norm" if max_grad_norm is None
            else f"a smaller {section}.max_grad_norm (now {max_grad_norm})")
    return f"nothing was published. Try a lower {section}.lr or {clip}"


def check_loss(value: float, section: str, epoch: int, batch: int, task: str,
               max_grad_norm: float | None = None) -> None:
    """Raise :class:`DivergedError` when a batch loss is not finite (``epoch`` and ``batch`` from 1)."""
    if not math.isfinite(value):
        raise DivergedError(f"{section}: training diverged at epoch {epoch}, batch {batch}: the {task} loss "
                            f"is {value}; {_advice(section, max_grad_norm)}")


def checked_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, task: str, loss: torch.Tensor, section: str, epoch: int,
    batch: int, *, max_grad_norm: float | None = None, heads: Mapping[str, nn.Module] | None = None,
    ctx: DistContext | None = None, scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One :func:`~pipeline.train.alternating.multitask_step` (through ``scaler`` with fp16 autocast),
    then :func:`check_loss` (under DDP on a non-finite loss of any rank, so all processes stop
    together); returns this process's loss."""
    value = float(multitask_step(model, optimizer, task, loss, heads=heads, max_grad_norm=max_grad_norm,
                                 scaler=scaler))
    check_loss(value if ctx is None else ddp.non_finite_of_any(value, ctx), section, epoch, batch, task,
               max_grad_norm)
    return value


def check_weights(model: nn.Module, section: str, epoch: int, batch: int | None = None,
                  max_grad_norm: float | None = None) -> None:
    """Raise :class:`DivergedError` naming the first parameter or buffer that holds a NaN or an inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            where = f"epoch {epoch}" if batch is None else f"epoch {epoch}, batch {batch}"
            raise DivergedError(f"{section}: training diverged at {where}: {name} holds non-finite values; "
                                f"{_advice(section, max_grad_norm)}")


def validation_metrics(au: TaskLabels | None, expr: TaskLabels | None,
                       va: TaskLabels | None = None) -> dict[str, dict[str, float]]:
    """ABAW metrics of each task that has validation frames: AU decisions (0/1), expression classes
    and valence-arousal values ((N, 2), NaN labels unlabelled)."""
    metrics: dict[str, dict[str, float]] = {}
    if au is not None:
        metrics["au"] = au_metrics(*au)
    if expr is not None:
        metrics["expr"] = expr_metrics(*expr)
    if va is not None:
        metrics["va"] = va_metrics(*va)
    return metrics


def frame_set_metrics(au: FacedLabels | None, expr: FacedLabels | None,
                      va: FacedLabels | None = None) -> dict[str, dict[str, Any]]:
    """The validation report on two frame sets: ``face_frames`` (frames with a face crop, the frames
    the paper scores, §4.4) and ``all_frames`` (every labelled frame).

    Each set holds :func:`validation_metrics` of the tasks with frames in it, their mean ``score``
    (``None`` when no task has a frame there) and the labelled ``frames`` per task; ``va`` (given
    only where a task has VA labels, so a dataset without them reports as before) adds its entry and
    its count, the frames with any VA label.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in FRAME_SETS:
        au_part, expr_part, va_part = _frames(au, name), _frames(expr, name), _frames(va, name)
        if va_part is not None and np.isnan(va_part[0]).all():
            va_part = None   # no VA label in this frame set: CCC is undefined there, the task is left out
        metrics: dict[str, Any] = validation_metrics(au_part, expr_part, va_part)
        frames = {"au": 0 if au_part is None else int((au_part[0] >= 0).any(axis=1).sum()),
                  "expr": 0 if expr_part is None else int((expr_part[0] >= 0).sum())}
        if va is not None:
            frames["va"] = 0 if va_part is None else int((~np.isnan(va_part[0])).any(axis=1).sum())
        report[name] = {**metrics, "score": selection_score(metrics) if metrics else None, "frames": frames}
    return report


def _frames(item: FacedLabels | None, frame_set: str) -> TaskLabels | None:
    """One task's ``(y_true, y_pred)`` restricted to ``frame_set`` (``None`` when no frame is left)."""
    if item is None:
        return None
    true, pred, face = item
    if frame_set == "face_frames":
        true, pred = true[face], pred[face]
    return (true, pred) if len(true) else None


def subject_metrics(
    logits: Mapping[str, tuple[np.ndarray, ...]],
    labels: Callable[[str], tuple[np.ndarray, ...]],
    subjects: Mapping[str, list[str]],
) -> dict[str, dict[str, Any]]:
    """:func:`frame_set_metrics` of whole-subject ``(au, expr[, va])`` outputs over each task's ``subjects``
    (AU: logit > 0; expression: argmax; VA: the values).

    ``labels(name)`` gives a subject's ``(au, expr, face_present[, va])``. VA is scored over
    ``subjects["va"]`` when the outputs carry the VA values (N, 2) as their third item and the labels
    as their fourth; outputs of AU and EXPR alone leave VA unscored, as before VA existed.
    """
    def task(names: list[str], column: int, true_column: int) -> FacedLabels | None:
        if not names:
            return None
        decide, dtype = _DECISIONS[column]
        return (np.concatenate([labels(n)[true_column] for n in names]),
                np.concatenate([decide(logits[n][column]) for n in names]).astype(dtype),
                np.concatenate([labels(n)[2] for n in names]).astype(bool))

    va_names = [n for n in subjects.get("va", []) if len(logits[n]) > 2]
    return frame_set_metrics(task(subjects["au"], 0, 0), task(subjects["expr"], 1, 1), task(va_names, 2, 3))


def selection_score(metrics: Mapping[str, Mapping[str, float] | None]) -> float:
    """The best-epoch criterion: mean of the ABAW scores of the tasks that have validation frames."""
    scores = [m["score"] for m in metrics.values() if m is not None]
    if not scores:
        raise ValueError("no validation frames for any task: cannot select the best epoch")
    return float(np.mean(scores))


def mean_losses(losses: Mapping[str, list[float]]) -> dict[str, float | None]:
    """Each task's mean batch loss of an epoch (``None`` for a task without batches)."""
    return {task: float(np.mean(values)) if values else None for task, values in losses.items()}


class Trainer(ABC):
    """What :func:`run_epochs` drives: a model, its optimiser and the trainer's own epoch, scorers and state."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def fit_epoch(self, loop: LoopState, epoch: int) -> Mapping[str, list[float]]:
        """Run the batches of the 0-based ``epoch`` from ``loop.batch`` on; each task's batch losses."""

    @abstractmethod
    def validate(self) -> dict[str, Any]:
        """The validation report of the current weights (called on every process)."""

    def select(self) -> dict[str, Any]:
        """The report on the held-out selection subjects (``holdout`` mode; called on every process)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any] | None:
        """What a saved state holds besides weights and optimiser: schedule, RNGs (called on every process)."""
        return None


def run_epochs(
    loop: LoopState,
    section: str,
    epochs: int,
    trainer: Trainer,
    max_grad_norm: float | None = None,
    mode: Mode = "validation",
    criterion: Callable[[Mapping[str, Any]], float] = criterion_score,
) -> dict[str, Any]:
    """Train epochs ``loop.epoch .. epochs-1`` of ``trainer``, keep one by ``mode``; return its record
    (weights loaded into ``trainer.model``).

    ``mode`` ``holdout`` scores each epoch by ``criterion(trainer.select())``, ``validation`` by
    ``criterion(trainer.validate())`` (default: the frame-set report's ``face_frames`` score), and
    ``last`` keeps the final epoch.
    """
    if mode == "holdout" and type(trainer).select is Trainer.select:
        raise ValueError(f"{section}: selection mode holdout needs the held-out subjects' scorer")
    model, optimizer = trainer.model, trainer.optimizer
    for epoch in range(loop.epoch, epochs):
        began = time.perf_counter()
        losses = trainer.fit_epoch(loop, epoch)
        check_weights(model, section, epoch + 1, max_grad_norm=max_grad_norm)
        metrics = trainer.validate()
        selection = trainer.select() if mode == "holdout" else None
        score = epoch_score(mode, metrics, selection, criterion)
        record = EpochRecord(epoch + 1, score, metrics, mean_losses(losses),
                             time.perf_counter() - began, selection)
        improved = loop.end_epoch(record, model, optimizer, trainer.extra_state())
        if loop.writer:
            log.info("%s epoch %d/%d: loss %s | validation %s | %s score %s%s (%.1fs)", section, record.epoch,
                     epochs, {t: None if v is None else round(v, 4) for t, v in record.loss.items()},
                     {s: None if m["score"] is None else round(m["score"], 4) for s, m in metrics.items()}, mode,
                     "-" if record.score is None else f"{record.score:.4f}", " (kept)" if improved else "",
                     record.seconds)
    best = loop.restore_best(model, section)
    if loop.writer:
        log.info("%s: kept epoch %d of %d (selection: %s)", section, best["epoch"], epochs, mode)
    return best
