"""Multi-process data-parallel training (torchrun / DDP) with a single-process fallback.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`distributed` reads them, joins the process group (NCCL on CUDA, gloo on CPU) and yields a
:class:`DistContext` and the process's device. Without those variables it yields a one-process
context and nothing is initialised, so the same training code runs either way.

Example:
    >>> ctx = DistContext()
    >>> ctx.is_main, shard(list(range(5)), DistContext(rank=1, world_size=2))
    (True, [1, 3])
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import check_fields
from pipeline.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        check_fields([(self.world_size >= 1, "world_size", f"must be >= 1, got {self.world_size}"),
                      (0 <= self.rank < self.world_size, "rank",
                       f"must be in [0, world_size), got {self.rank} for world size {self.world_size}")])

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0


def context_from_env(env: dict[str, str] | None = None) -> DistContext:
    """The context described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables."""
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from exc
    return DistContext(rank=rank, world_size=world, local_rank=local)


@contextmanager
def distributed(device_name: str) -> Iterator[tuple[DistContext, torch.device]]:
    """Join the process group described by the environment (if any); yield ``(context, device)``."""
    ctx = context_from_env()
    device = resolve_device(device_name)
    if not ctx.enabled:
        yield ctx, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    try:
        yield ctx, device
    finally:
        dist.destroy_process_group()


def shard(items: Sequence[T], ctx: DistContext) -> Sequence[T]:
    """This rank's share of ``items`` (every ``world_size``-th item, starting at ``rank``)."""
    return items[ctx.rank::ctx.world_size]


def gather_objects(obj: T, ctx: DistContext) -> list[T]:
    """Every rank's ``obj`` (picklable) in rank order; ``[obj]`` when not distributed."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def non_finite_of_any(value: float, ctx: DistContext) -> float:
    """``value`` when every rank's is finite, else the first non-finite one (every rank gets the same).

    So that all processes stop at the same batch when one of them sees a diverged loss, instead of
    the others waiting for it at the next collective call.
    """
    if not ctx.enabled:
        return value
    return next((v for v in gather_objects(value, ctx) if not math.isfinite(v)), value)


def unshard(parts: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Reassemble rows split by :func:`shard` over ``len(parts)`` ranks into their original order."""
    if not parts:
        raise ValueError("nothing to reassemble")
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def broadcast(obj: T, ctx: DistContext) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.enabled:
        dist.barrier()
