"""Alternating multi-task updates (paper §3.1): only one head learns at a time.

Frames mostly carry the labels of one task only (AU, expression or valence-arousal), so the task heads
are trained in rotation together with the shared trunk (the paper rotates AU and expression; the
valence-arousal head joins the rotation as a third task, our extension):

* ``epoch`` mode: a whole epoch of one task's batches, then a whole epoch of the other's;
* ``batch`` mode: one batch of each task in turn within every epoch. The shorter task's loader is
  re-iterated (cycled, which reshuffles it) until the longer one is exhausted, so each epoch shows
  every labelled frame at least once and both heads receive the same number of updates.

:func:`multitask_step` performs one optimiser step in which the inactive head's parameters have
``grad is None``; torch optimisers skip such parameters entirely, so their weights, momentum buffers
and weight decay stay untouched. It works with any module exposing ``au_head``, ``expr_head``
and ``va_head`` (optionally wrapped in ``DistributedDataParallel``), or with explicit ``heads``.

Example:
    >>> schedule = TaskSchedule("epoch")
    >>> [schedule.task_for_epoch(e) for e in range(3)]
    ['expr', 'au', 'expr']
    >>> [t for t, _ in alternating_batches(TaskSchedule("batch"), 0, {"au": [1, 2, 3], "expr": [9]})]
    ['expr', 'au', 'expr', 'au', 'expr', 'au']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Mapping

import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.labels import TASKS

Task = Literal["au", "expr", "va"]
Mode = Literal["epoch", "batch"]

HEAD_ATTRIBUTES: dict[str, str] = {"au": "au_head", "expr": "expr_head", "va": "va_head"}
# The order every trainer rotates its tasks in (the paper starts with expression); a task without
# training labels drops out of it.
ROTATION: tuple[Task, ...] = ("expr", "au", "va")


@dataclass(frozen=True)
class TaskSchedule:
    """Which task is active per epoch (``epoch`` mode) or per batch (``batch`` mode).

    ``tasks`` is the rotation order; the paper starts with an expression epoch. A schedule with a
    single task trains that head alone (e.g. when a dataset has only AU labels).
    """

    mode: Mode
    tasks: tuple[Task, ...] = ("expr", "au")

    def __post_init__(self) -> None:
        if self.mode not in ("epoch", "batch"):
            raise ConfigError(f"must be 'epoch' or 'batch', got {self.mode!r}", key="mode")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks) or not set(self.tasks) <= set(TASKS):
            raise ConfigError(f"must be distinct names from {TASKS}, got {self.tasks!r}", key="tasks")

    def task_for_epoch(self, epoch: int) -> Task:
        """The task trained during ``epoch`` (epoch mode only)."""
        if self.mode != "epoch":
            raise ValueError("task_for_epoch is defined for mode 'epoch'; batch mode changes task every batch")
        return self.tasks[epoch % len(self.tasks)]

    def task_for_batch(self, epoch: int, batch: int) -> Task:
        """The task of batch number ``batch`` (0-based within ``epoch``)."""
        if self.mode == "epoch":
            return self.task_for_epoch(epoch)
        return self.tasks[batch % len(self.tasks)]


def alternating_batches(
    schedule: TaskSchedule, epoch: int, loaders: Mapping[str, Iterable[Any]]
) -> Iterator[tuple[Task, Any]]:
    """Yield ``(task, batch)`` for one epoch from per-task loaders (e.g. ``{"au": ..., "expr": ...}``).

    Loaders must be re-iterable (a ``DataLoader``, a list). In batch mode a task whose loader is
    empty is skipped; when every loader is empty nothing is yielded.
    """
    missing = [task for task in schedule.tasks if task not in loaders]
    if missing:
        raise ValueError(f"no loader for scheduled task(s) {missing}; got loaders for {sorted(loaders)}")
    if schedule.mode == "epoch":
        task = schedule.task_for_epoch(epoch)
        for batch in loaders[task]:
            yield task, batch
        return
    yield from _interleave(schedule.tasks, loaders)


_END = object()


def _interleave(tasks: tuple[Task, ...], loaders: Mapping[str, Iterable[Any]]) -> Iterator[tuple[Task, Any]]:
    """Round-robin over ``tasks``, re-iterating finished loaders until each has finished once.

    One batch per task is fetched ahead, so the epoch ends right after the round in which the
    longest loader yields its last batch (every task gets the same number of batches).
    """
    iterators = {task: iter(loaders[task]) for task in tasks}
    pending = {task: next(iterators[task], _END) for task in tasks}
    tasks = tuple(task for task in tasks if pending[task] is not _END)  # empty loaders are skipped
    exhausted: set[str] = set()
    while tasks:
        exhausted |= {task for task in tasks if pending[task] is _END}
        if exhausted >= set(tasks):
            return
        for task in tasks:
            if pending[task] is _END:
                iterators[task] = iter(loaders[task])
                pending[task] = next(iterators[task], _END)
                if pending[task] is _END:
                    raise ValueError(f"the {task!r} loader yielded nothing when re-iterated; pass a re-iterable loader")
            yield task, pending[task]
            pending[task] = next(iterators[task], _END)


def task_heads(model: nn.Module) -> dict[Task, nn.Module]:
    """The ``{"au": au_head, "expr": expr_head, "va": va_head}`` of ``model`` (unwrapping DDP's ``.module``)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    heads = {task: getattr(inner, attr, None) for task, attr in HEAD_ATTRIBUTES.items()}
    absent = [HEAD_ATTRIBUTES[task] for task, head in heads.items() if not isinstance(head, nn.Module)]
    if absent:
        raise ValueError(f"{type(inner).__name__} has no module attribute(s) {absent}; pass heads= explicitly")
    return heads  # type: ignore[return-value]


def multitask_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Task,
    loss: torch.Tensor,
    *,
    heads: Mapping[str, nn.Module] | None = None,
    max_grad_norm: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Back-propagate ``loss`` (the active ``task``'s loss only) and step; inactive heads stay unchanged.

    Gradients are cleared with ``set_to_none`` before the backward pass, and the inactive heads'
    gradients are reset to ``None`` after it (in case the loss touched them, e.g. with a zero weight
    or through DDP's reducer), so the optimiser skips those parameters, momentum and weight decay
    included. Returns the detached loss.
    """
    heads = task_heads(model) if heads is None else heads
    if task not in heads:
        raise ValueError(f"unknown task {task!r}; heads are {sorted(heads)}")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    for name, head in heads.items():
        if name != task:
            for param in head.parameters():
                param.grad = None
    if max_grad_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()
