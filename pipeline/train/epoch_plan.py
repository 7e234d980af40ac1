"""The deterministic batch plan of one training epoch: which task and which frames, in which order.

The whole epoch is planned up front from ``(seed, epoch)`` alone, so a run interrupted after ``k``
batches resumes by skipping the first ``k`` entries of the same plan, and the plan does not depend
on the number of processes: under DDP every global batch is split between the ranks
(:func:`pipeline.train.ddp.shard`), so the global batch size and the sample order stay the same
on one CPU or on eight GPUs.

Example:
    >>> from pipeline.train.alternating import TaskSchedule
    >>> plan = epoch_plan(TaskSchedule("batch"), 0, {"au": 6, "expr": 3}, batch_size=3, seed=0)
    >>> [(task, len(idx)) for task, idx in plan]
    [('expr', 3), ('au', 3), ('expr', 3), ('au', 3)]
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from pipeline.train.alternating import Task, TaskSchedule, alternating_batches

_TASK_SALT: dict[str, int] = {"au": 1, "expr": 2, "va": 3}


def epoch_order(n: int, seed: int, epoch: int, task: str, cycle: int = 0, limit: int | None = None) -> np.ndarray:
    """A permutation of ``range(n)`` for this (seed, epoch, task, cycle), truncated to ``limit`` items."""
    rng = np.random.default_rng([seed, epoch, _TASK_SALT[task], cycle])
    order = rng.permutation(n)
    return order if limit is None else order[:limit]


def split_batches(order: np.ndarray, batch_size: int, min_batch: int) -> list[np.ndarray]:
    """Cut ``order`` into batches of ``batch_size``; a trailing batch smaller than ``min_batch`` is dropped.

    BatchNorm in training mode needs at least two samples per process, hence ``min_batch``.
    """
    if batch_size < 1 or min_batch < 1:
        raise ValueError(f"batch_size and min_batch must be >= 1, got {batch_size} and {min_batch}")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < min_batch:
        batches.pop()
    return batches


class _TaskBatches:
    """A task's batches for one epoch; iterating again (batch-mode cycling) draws a fresh order."""

    def __init__(self, n: int, task: str, seed: int, epoch: int, batch_size: int, min_batch: int,
                 limit: int | None) -> None:
        self.n, self.task, self.seed, self.epoch = n, task, seed, epoch
        self.batch_size, self.min_batch, self.limit = batch_size, min_batch, limit
        self.cycle = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        order = epoch_order(self.n, self.seed, self.epoch, self.task, self.cycle, self.limit)
        self.cycle += 1
        return iter(split_batches(order, self.batch_size, self.min_batch))


def epoch_plan(
    schedule: TaskSchedule,
    epoch: int,
    sizes: Mapping[str, int],
    batch_size: int,
    seed: int,
    max_frames: int | None = None,
    min_batch: int = 2,
) -> list[tuple[Task, np.ndarray]]:
    """The ``(task, frame indices)`` batches of ``epoch``; indices point into that task's frame set.

    ``max_frames`` caps the frames drawn per task per epoch (a fresh random subset every epoch),
    which bounds an epoch's cost on large datasets.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    loaders = {
        task: _TaskBatches(sizes.get(task, 0), task, seed, epoch, batch_size, min_batch, max_frames)
        for task in schedule.tasks
    }
    return list(alternating_batches(schedule, epoch, loaders))
