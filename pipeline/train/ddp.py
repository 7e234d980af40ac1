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
from typing import Iterator, Sequence, TypeVar

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
def distributed(device_name: str, init_method: str = "env://") -> Iterator[tuple[DistContext, torch.device]]:
    """Join the process group described by the environment (if any); yield ``(context, device)``.

    ``init_method`` is where the ranks meet: torchrun's store by default (``MASTER_ADDR``/``MASTER_PORT``),
    or e.g. ``file:///shared/path`` for a store that opens no socket.
    """
    ctx = context_from_env()
    device = resolve_device(device_name)
    if not ctx.enabled:
        yield ctx, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method=init_method, rank=ctx.rank, world_size=ctx.world_size)
    try:
        yield ctx, device
    finally:
        dist.destroy_process_group()


def shard(items: Sequence[T], ctx: DistContext) -> Sequence[T]:
    """This rank's share of ``items`` (every ``world_size``-th item, starting at ``rank``)."""
    return items[ctx.rank::ctx.world_size]


def _wire_device() -> torch.device:
    """Where collective tensors must live: the process's GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_tensors(tensor: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on every rank) in rank order, on the CPU;
    ``[tensor]`` when not distributed.

    Ranks exchange raw tensor bytes, never pickles: a rank, or whoever reaches the process group's
    store, cannot make another rank run code by what it sends.
    """
    if not ctx.enabled:
        return [tensor]
    local = tensor.detach().contiguous().to(_wire_device())
    out = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(out, local)
    return [part.cpu() for part in out]


def gather_rows(rows: np.ndarray, ctx: DistContext) -> list[np.ndarray]:
    """Every rank's ``rows`` in rank order; ``[rows]`` when not distributed.

    The number of rows may differ between ranks (a :func:`shard` of an uneven count); the trailing
    shape and the dtype must be the same on every rank, or every rank raises ``ValueError``.
    """
    if not ctx.enabled:
        return [rows]
    rows = np.ascontiguousarray(rows)
    if not 1 <= rows.ndim <= _MAX_TRAILING + 1:
        raise ValueError(f"gathered arrays have 1 to {_MAX_TRAILING + 1} dimensions, got shape {rows.shape}")
    # the header: row count, then the trailing shape and a dtype tag, which every rank must share
    header = torch.tensor([rows.shape[0], rows.ndim, *rows.shape[1:], *([0] * (_MAX_TRAILING - rows.ndim + 1)),
                           _dtype_tag(rows.dtype)], dtype=torch.int64)
    headers = gather_tensors(header, ctx)
    if any(not torch.equal(h[1:], headers[0][1:]) for h in headers):
        shapes = [(tuple(int(d) for d in h[2:1 + int(h[1])]), int(h[-1])) for h in headers]
        raise ValueError(f"ranks gather rows of different trailing shapes or dtypes: {shapes}")
    counts = [int(h[0]) for h in headers]
    padded = np.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype)
    padded[:len(rows)] = rows
    parts = gather_tensors(torch.from_numpy(padded), ctx)
    return [part.numpy()[:count] for part, count in zip(parts, counts)]


_MAX_TRAILING = 4  # trailing dimensions a gathered array may have
_DTYPES = (np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_)


def _dtype_tag(dtype: np.dtype) -> int:
    """The index of ``dtype`` among those :func:`gather_rows` carries."""
    for tag, known in enumerate(_DTYPES):
        if dtype == known:
            return tag
    raise ValueError(f"cannot gather arrays of dtype {dtype}; use one of {[np.dtype(d).name for d in _DTYPES]}")


def gather_floats(value: float, ctx: DistContext) -> list[float]:
    """Every rank's ``value`` in rank order; ``[value]`` when not distributed."""
    return [float(v) for v in gather_tensors(torch.tensor([value], dtype=torch.float64), ctx)]


def non_finite_of_any(value: float, ctx: DistContext) -> float:
    """``value`` when every rank's is finite, else the first non-finite one (every rank gets the same).

    So that all processes stop at the same batch when one of them sees a diverged loss, instead of
    the others waiting for it at the next collective call.
    """
    if not ctx.enabled:
        return value
    return next((v for v in gather_floats(value, ctx) if not math.isfinite(v)), value)


def unshard(parts: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Reassemble rows split by :func:`shard` over ``len(parts)`` ranks into their original order."""
    if not parts:
        raise ValueError("nothing to reassemble")
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


DIGEST_LENGTH = 64  # characters of a sha256 hex digest


def broadcast_digest(digest: str | None, ctx: DistContext) -> str:
    """Rank 0's sha256 hex ``digest`` on every rank (the others pass None), as 64 bytes, not a pickle."""
    if not ctx.enabled:
        if digest is None:
            raise ValueError("rank 0 must pass the digest it broadcasts")
        return digest
    box = torch.zeros(DIGEST_LENGTH, dtype=torch.uint8)
    if ctx.is_main:
        if digest is None or len(digest) != DIGEST_LENGTH or not digest.isascii():
            raise ValueError(f"a sha256 hex digest of {DIGEST_LENGTH} characters is broadcast, got {digest!r}")
        box = torch.frombuffer(bytearray(digest.encode("ascii")), dtype=torch.uint8)
    box = box.to(_wire_device())
    dist.broadcast(box, src=0)
    return bytes(box.cpu().tolist()).decode("ascii")


def sync_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.enabled:
        dist.barrier()
