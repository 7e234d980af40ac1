"""The optimiser and loss settings every training config shares, their checks, and the optimiser.

Each training params section (``finetune_visual``, ``train_audio``, ``train_sequence``) keeps these
keys flat (``finetune_visual.lr``, so ``dvc exp run -S finetune_visual.lr=...`` works), and its
config's ``optim()`` composes them into one :class:`OptimConfig`; the checks and the optimiser
construction live here once.

Example:
    >>> from torch import nn
    >>> cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.0)
    >>> type(cfg.build(nn.Linear(2, 1).parameters())).__name__
    'SGD'
    >>> OptimConfig(lr=0.0)
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: lr: must be > 0, got 0.0
    >>> factor = lr_factor(total_steps=10, warmup_steps=4)
    >>> [round(factor(step), 3) for step in (0, 3, 4, 9)]   # 1/4 .. 1 over the warm-up, then cosine
    [0.25, 1.0, 1.0, 0.067]
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> [g["lr"] for g in cfg.build_groups([(net[0].parameters(), 0.1), (net[1].parameters(), 1.0)]).param_groups]
    [0.010000000000000002, 0.1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch

from pipeline.config import check_fields

OPTIM_KEYS: tuple[str, ...] = ("optimizer", "lr", "momentum", "weight_decay", "max_grad_norm",
                               "focal_gamma", "pos_weight_cap")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser (SGD with momentum, or Adam), gradient clipping and the two losses' settings."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9              # SGD only
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # None: no gradient clipping
    focal_gamma: float = 2.0           # expression focal loss
    pos_weight_cap: float = 10.0       # AU BCE pos_weight = negatives/positives per AU, capped

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in ("sgd", "adam"), "optimizer", f"must be sgd or adam, got {self.optimizer!r}"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", f"must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
             f"must be > 0 or null, got {self.max_grad_norm}"),
            (math.isfinite(self.focal_gamma) and self.focal_gamma >= 0, "focal_gamma",
             f"must be >= 0, got {self.focal_gamma}"),
            (math.isfinite(self.pos_weight_cap) and self.pos_weight_cap > 0, "pos_weight_cap",
             f"must be > 0, got {self.pos_weight_cap}"),
        ]
        check_fields(checks)

    @classmethod
    def of(cls, config: Any) -> OptimConfig:
        """The shared block of a training config (its flat keys; absent ones keep their defaults)."""
        return cls(**{name: getattr(config, name) for name in OPTIM_KEYS if hasattr(config, name)})

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser over ``params``."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def build_groups(self, groups: Iterable[tuple[Iterable[torch.nn.Parameter], float]]) -> torch.optim.Optimizer:
        """The optimiser over parameter groups ``(params, lr multiplier)``: each group's learning rate
        is ``lr * multiplier`` (a schedule then scales every group by the same factor)."""
        return self.build([{"params": list(params), "lr": self.lr * mult} for params, mult in groups])


Decay = Literal["cosine", "constant"]


def lr_factor(total_steps: int, warmup_steps: int = 0, decay: Decay = "cosine") -> Callable[[int], float]:
    """The per-step learning-rate factor (for ``torch.optim.lr_scheduler.LambdaLR``) of a linear
    warm-up over ``warmup_steps`` steps, then ``decay`` over the remaining steps.

    Warm-up step ``i`` (from 0) runs at ``(i + 1) / warmup_steps`` of the learning rate, so the first
    step is not wasted at 0 and the last warm-up step reaches it; ``cosine`` then decays from 1 to 0
    at ``total_steps``, ``constant`` stays at 1. Without warm-up, the cosine is the one the trainers
    have always used, to the bit (a resumed run and a published model stay reproducible).
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if decay not in ("cosine", "constant"):
        raise ValueError(f"decay must be cosine or constant, got {decay!r}")
    decay_steps = total_steps - warmup_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "constant":
            return 1.0
        done = step - warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * min(done, decay_steps) / max(1, decay_steps)))

    return factor
