"""Fusion head on [visual, audio] embeddings, and loaders for the ``train-audio`` checkpoint.

``cache/audio/model.pt`` is a dict of plain containers and tensors (``torch.load(weights_only=True)``):
``{"tdnn_arch": dict, "tdnn": state_dict, "fusion_arch": dict, "fusion": state_dict,
"audio_config": dict}``.

Example:
    >>> import torch
    >>> head = FusionHead(FusionConfig(hidden=64)).eval()
    >>> au, expr = head(torch.randn(3, 512), torch.randn(3, 512))
    >>> au.shape, expr.shape
    (torch.Size([3, 12]), torch.Size([3, 7]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.audio.features import AudioConfig
from pipeline.config import ConfigError, from_dict
from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS
from pipeline.models.tdnn import TDNN, TDNNConfig

CHECKPOINT_KEYS: tuple[str, ...] = ("tdnn_arch", "tdnn", "fusion_arch", "fusion", "audio_config")


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
    """Concatenate visual (B, 512) and audio (B, 512) embeddings -> AU (B, 12) and EXPR (B, 7) logits."""

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

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(au_logits, expr_logits)``."""
        if visual.shape[-1] != self.cfg.visual_dim or audio.shape[-1] != self.cfg.audio_dim:
            raise ValueError(f"fusion expects visual (..., {self.cfg.visual_dim}) and audio (..., {self.cfg.audio_dim}), "
                             f"got {tuple(visual.shape)} and {tuple(audio.shape)}")
        shared = self.trunk(torch.cat([visual, audio], dim=-1))
        return self.au_head(shared), self.expr_head(shared)


def _check_checkpoint(ckpt: dict[str, Any]) -> None:
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"audio checkpoint lacks {missing}; expected keys {list(CHECKPOINT_KEYS)}")


def load_tdnn(ckpt: dict[str, Any]) -> TDNN:
    """The trained :class:`TDNN` of an audio checkpoint dict, in eval mode."""
    _check_checkpoint(ckpt)
    model = TDNN(from_dict(TDNNConfig, ckpt["tdnn_arch"], where="checkpoint:tdnn_arch"))
    model.load_state_dict(ckpt["tdnn"])
    return model.eval()


def load_fusion_head(ckpt: dict[str, Any]) -> FusionHead:
    """The trained :class:`FusionHead` of an audio checkpoint dict, in eval mode."""
    _check_checkpoint(ckpt)
    head = FusionHead(from_dict(FusionConfig, ckpt["fusion_arch"], where="checkpoint:fusion_arch"))
    head.load_state_dict(ckpt["fusion"])
    return head.eval()


def load_audio_config(ckpt: dict[str, Any]) -> AudioConfig:
    """The :class:`AudioConfig` (log-mel and window parameters) the checkpoint's TDNN was trained with."""
    _check_checkpoint(ckpt)
    return from_dict(AudioConfig, ckpt["audio_config"], where="checkpoint:audio_config")
