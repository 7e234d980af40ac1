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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

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
