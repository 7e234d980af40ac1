"""Where a resumable training loop stands: position, history, best epoch, saved state.

Every trainer (visual, audio, sequence) keeps one :class:`LoopState`. Epochs are numbered from 1
in the records, the logs and the metrics files; ``LoopState.epoch`` counts the finished epochs, so
it is also the 0-based index of the epoch in progress (the index that seeds an epoch's batch plan).
``LoopState.batch`` counts the finished batches of that epoch, so a run checkpointed mid-epoch
resumes at the next batch.

The state file holds the run's ``key`` (what the run depends on: params and data), the position,
the model/optimizer state, the best epoch so far (with a CPU copy of its weights), the history,
the torch RNG state and a trainer's ``extra`` state (e.g. a learning-rate schedule). Under DDP
every process calls :meth:`LoopState.save` (the caller's ``extra`` may be gathered collectively)
and only the writer (rank 0) writes the file.

Example::

    loop = LoopState.resume(work_dir / "state.pt", {"config": ..., "data": ...}, model, optimizer)
    for epoch in range(loop.epoch, epochs):
        ...                                           # train, validate
        loop.end_epoch(EpochRecord(epoch + 1, 0.4, {...}, {...}, 12.0), model, optimizer)
    best = loop.restore_best(model, "train_audio")   # best weights loaded, model in eval mode
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.model_files.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

STATE_VERSION = 3   # the state file's layout; a file of another layout is not resumed


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: its number (from 1), selection score (``None``: the last epoch is kept),
    validation metrics, mean losses, seconds and the held-out subjects' metrics (holdout only)."""

    epoch: int
    score: float | None
    metrics: dict[str, Any]
    loss: dict[str, float | None]
    seconds: float
    selection: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain containers, as kept in the history and the state file."""
        return dataclasses.asdict(self)


def _fits(saved: Mapping[str, Any], model: nn.Module) -> bool:
    """Whether the ``saved`` state dict has exactly ``model``'s tensor names and shapes."""
    own = model.state_dict()
    return saved.keys() == own.keys() and all(
        tuple(getattr(saved[k], "shape", ())) == tuple(own[k].shape) for k in own
    )


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    # A run resumed on another number of GPUs keeps the CUDA generators it has.
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class LoopState:
    """Where a training loop stands: finished epochs and batches, best epoch so far, per-epoch history."""

    path: Path
    key: dict[str, Any]
    epoch: int = 0
    batch: int = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    writer: bool = True                        # False on DDP ranks other than 0
    extra: dict[str, Any] | None = None        # the trainer's own saved state, when resumed
    resumed_from: tuple[int, int] | None = None  # (epoch, batch) the run continued from

    @classmethod
    def resume(
        cls, path: str | Path, key: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
        max_epochs: int | None = None, writer: bool = True,
    ) -> LoopState:
        """Restore model, optimizer and RNG from ``path`` when its key matches (and, if given, it is
        at most ``max_epochs`` in); else a fresh state. The trainer restores :attr:`extra` itself."""
        path = Path(path)
        fresh = cls(path, key, writer=writer)
        state = load_checkpoint(path, "training state", missing_ok=True)
        if state is None:
            return fresh
        if state.get("version") != STATE_VERSION:
            log.info("%s: saved state has another layout; starting over", path)
            return fresh
        if any(state.get(name) != value for name, value in key.items()):
            log.info("%s: saved state is for other params or data; starting over", path)
            return fresh
        if max_epochs is not None and state["epoch"] > max_epochs:
            log.info("%s: saved state is %d epochs in, more than the %d asked for; starting over",
                     path, state["epoch"], max_epochs)
            return fresh
        if not _fits(state["model"], model):
            # same params and data, but the code's model changed (e.g. a head was added): a new run
            log.info("%s: saved state holds another model's weights than this code builds; starting over", path)
            return fresh
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        position = (state["epoch"], state["batch"])
        log.info("resuming from %s after %d epochs and %d batches", path, *position)
        return cls(path, key, state["epoch"], state["batch"], state["best"], list(state["history"]),
                   writer, state.get("extra"), position)

    def record(self, entry: EpochRecord, model: nn.Module) -> bool:
        """Append ``entry`` (the epoch just finished); keep it as best if its score is ``None`` (the
        last epoch is kept) or finite and strictly higher than the best so far. Returns whether it
        became the best."""
        self.history.append(entry.as_dict())
        self.epoch, self.batch = entry.epoch, 0
        if entry.score is not None:
            if not math.isfinite(entry.score):
                return False
            if self.best is not None and not entry.score > self.best["score"]:
                return False
        self.best = {**entry.as_dict(),
                     "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        return True

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any] | None = None) -> None:
        """Write the loop state (with model, optimizer, RNG and ``extra`` state) to ``path`` atomically
        (the writer only)."""
        if not self.writer:
            return
        save_checkpoint(self.path, {
            **self.key, "version": STATE_VERSION, "epoch": self.epoch, "batch": self.batch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best": self.best, "history": self.history,
            "rng": _rng_state(), "extra": extra,
        })

    def end_epoch(self, entry: EpochRecord, model: nn.Module, optimizer: torch.optim.Optimizer,
                  extra: dict[str, Any] | None = None) -> bool:
        """:meth:`record` ``entry``, then :meth:`save`; returns whether the epoch is the new best."""
        improved = self.record(entry, model)
        self.save(model, optimizer, extra)
        return improved

    def restore_best(self, model: nn.Module, section: str) -> dict[str, Any]:
        """Load the best epoch's weights into ``model`` (eval mode) and return the best entry."""
        if self.best is None:
            raise ValueError(f"{self.path}: {section} has no epoch with a finite selection score "
                             f"({section}.epochs must be >= 1)")
        model.load_state_dict(self.best["state_dict"])
        model.eval()
        return self.best
