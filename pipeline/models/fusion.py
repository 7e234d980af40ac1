"""Fusion head on [visual, audio] embeddings.

It is trained with the TDNN by ``train-audio``, whose ``model.pt`` holds both
(:mod:`pipeline.model_files.audio` writes and reads it).

Example:
    >>> import torch
    >>> head = FusionHead(FusionConfig(hidden=64)).eval()
    >>> au, expr, va = head(torch.randn(3, 512), torch.randn(3, 512))
    >>> au.shape, expr.shape, va.shape
    (torch.Size([3, 12]), torch.Size([3, 7]), torch.Size([3, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS, NUM_VA

@dataclass(frozen=True)
class FusionConfig:
    """Architecture of a :class:`FusionHead`."""

    hidden: int = 256          # width of the shared layer; 0 = linear heads on the concatenation
    dropout: float = 0.0
    visual_dim: int = EMBEDDING_DIM
    audio_dim: int = EMBEDDING_DIM

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.visual_dim < 1 or self.audio_dim < 1:
            raise ConfigError(f"must be >= 0 and the input dims >= 1, got hidden={self.hidden}, "
                              f"visual_dim={self.visual_dim}, audio_dim={self.audio_dim}", key="hidden")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", key="dropout")


class FusionHead(nn.Module):
    """Concatenate visual (B, 512) and audio (B, 512) embeddings -> AU (B, 12), EXPR (B, 7) logits, VA (B, 2)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.visual_dim + cfg.audio_dim
        if cfg.hidden > 0:
            self.trunk: nn.Module = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
            width = cfg.hidden
        else:
            self.trunk = nn.Dropout(cfg.dropout)
        self.au_head = nn.Linear(width, NUM_AUS)
        self.expr_head = nn.Linear(width, NUM_EXPRS)
        self.va_head = nn.Linear(width, NUM_VA)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(au_logits, expr_logits, va)``, ``va`` valence and arousal in [-1, 1] (tanh)."""
        if visual.shape[-1] != self.cfg.visual_dim or audio.shape[-1] != self.cfg.audio_dim:
            raise ValueError(f"fusion expects visual (..., {self.cfg.visual_dim}) and audio (..., {self.cfg.audio_dim}), "
                             f"got {tuple(visual.shape)} and {tuple(audio.shape)}")
        shared = self.trunk(torch.cat([visual, audio], dim=-1))
        return self.au_head(shared), self.expr_head(shared), torch.tanh(self.va_head(shared))
