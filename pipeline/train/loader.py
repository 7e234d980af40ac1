"""How a trainer is fed: DataLoader worker processes, pinned host memory, prefetching.

:class:`LoaderConfig` gathers a trainer's ``--workers``, ``--pin-memory``, ``--prefetch-factor`` and
``--persistent-workers`` options. None of them changes what is computed; they decide how fast the
batches arrive, so they are command-line options, not params (editing them reruns nothing). A
trainer hands each epoch's batches to one :class:`EpochLoader`, so persistent workers do persist.

Example:
    >>> import torch
    >>> LoaderConfig(workers=2, prefetch_factor=4).dataloader_kwargs(torch.device("cpu"))
    {'num_workers': 2, 'pin_memory': False, 'prefetch_factor': 4, 'persistent_workers': False}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config import check_fields


@dataclass(frozen=True)
class LoaderConfig:
    """DataLoader feeding of a trainer (its command-line options); the defaults load in the training
    process itself."""

    workers: int = 0                   # worker processes decoding JPEG crops (0 = in the training process)
    pin_memory: bool = True            # page-locked host batches when the device is CUDA (ignored on the CPU)
    prefetch_factor: int | None = None  # batches each worker loads ahead; None = torch's default (2)
    persistent_workers: bool = False   # keep the workers between epochs (needs workers >= 1)

    def __post_init__(self) -> None:
        check_fields([
            (self.workers >= 0, "workers", f"must be >= 0, got {self.workers}"),
            (self.prefetch_factor is None or (self.prefetch_factor >= 1 and self.workers > 0), "prefetch_factor",
             f"must be >= 1 and needs workers >= 1 (or unset), got {self.prefetch_factor} "
             f"with workers {self.workers}"),
            (not self.persistent_workers or self.workers > 0, "persistent_workers",
             "needs workers >= 1, got workers 0"),
        ])

    def dataloader_kwargs(self, device: torch.device) -> dict[str, Any]:
        """The ``DataLoader`` keyword arguments for batches bound for ``device``."""
        kwargs: dict[str, Any] = {"num_workers": self.workers,
                                  "pin_memory": self.pin_memory and device.type == "cuda"}
        if self.workers:
            kwargs["prefetch_factor"] = self.prefetch_factor
            kwargs["persistent_workers"] = self.persistent_workers
        return kwargs


class EpochLoader:
    """One ``DataLoader`` for all the epochs of a trainer, whose batches are set anew each epoch.

    The trainers draw each epoch's batches themselves; handing them to one loader (this object is its
    batch sampler, iterated in the training process) rather than building a loader per epoch is what
    lets ``persistent_workers`` keep the worker processes from one epoch to the next.
    """

    def __init__(self, dataset: Dataset, loader: LoaderConfig, device: torch.device) -> None:
        self.dataset = dataset
        self._batches: list[list[int]] = []
        self.loader = DataLoader(dataset, batch_sampler=self, **loader.dataloader_kwargs(device))

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def epoch(self, batches: Sequence[Sequence[int]]) -> DataLoader:
        """The loader, now yielding ``batches`` (lists of dataset indices) in order."""
        self._batches = [list(batch) for batch in batches]
        return self.loader
