"""Per-epoch bookkeeping of a resumable training loop: history, best epoch, saved state.

The state file holds the run's ``key`` (what the run depends on: params and data), the next epoch,
the model/optimizer state, the best epoch so far (with a CPU copy of its weights), the history and
the torch RNG state. A rerun with the same key continues where the saved run stopped.

Example::

    loop = LoopState.resume(work_dir / "state.pt", {"config": ..., "data": ...}, model, optimizer)
    for epoch in range(loop.epoch, epochs):
        ...                                           # train, validate
        loop.end_epoch({"epoch": epoch, "score": 0.4, "metrics": {...}}, model, optimizer)
    best = loop.restore_best(model, "train_audio")   # best weights loaded, model in eval mode
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where a training loop stands: next epoch, best epoch so far and per-epoch history."""

    path: Path
    key: dict[str, Any]
    epoch: int = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def resume(
        cls, path: str | Path, key: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
        max_epochs: int | None = None,
    ) -> LoopState:
        """Restore model, optimizer and RNG from ``path`` when its key matches (and, if given, it is
        at most ``max_epochs`` in); else a fresh state."""
        path = Path(path)
        fresh = cls(path, key)
        state = load_checkpoint(path, "training state", missing_ok=True)
        if state is None:
            return fresh
        if any(state.get(name) != value for name, value in key.items()):
            log.info("%s: saved state is for other params or data; starting over", path)
            return fresh
        if max_epochs is not None and state["epoch"] > max_epochs:
            log.info("%s: saved state is %d epochs in, more than the %d asked for; starting over",
                     path, state["epoch"], max_epochs)
            return fresh
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming from %s at epoch %d", path, state["epoch"])
        return cls(path, key, state["epoch"], state["best"], list(state["history"]))

    def record(self, entry: dict[str, Any], model: nn.Module) -> bool:
        """Append ``entry`` (``epoch``, ``score``, ``metrics``, ...); keep it as best if its score is
        strictly higher. Returns whether it became the best."""
        self.history.append(entry)
        self.epoch = entry["epoch"] + 1
        if self.best is not None and not entry["score"] > self.best["score"]:
            return False
        self.best = {"score": entry["score"], "epoch": entry["epoch"], "metrics": entry["metrics"],
                     "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        return True

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write the loop state (with model, optimizer and RNG state) to ``path`` atomically."""
        save_checkpoint(self.path, {
            **self.key, "epoch": self.epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "best": self.best, "history": self.history, "torch_rng": torch.get_rng_state(),
        })

    def end_epoch(self, entry: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """:meth:`record` ``entry``, then :meth:`save`; returns whether the epoch is the new best."""
        improved = self.record(entry, model)
        self.save(model, optimizer)
        return improved

    def restore_best(self, model: nn.Module, section: str) -> dict[str, Any]:
        """Load the best epoch's weights into ``model`` (eval mode) and return the best entry."""
        if self.best is None:
            raise ValueError(f"no epoch was trained ({section}.epochs must be >= 1)")
        model.load_state_dict(self.best["state_dict"])
        model.eval()
        return self.best
