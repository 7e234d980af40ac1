"""The multi-task visual model: a shared backbone, an AU head (12 logits), an expression head (7) and a
valence-arousal head (2 values in [-1, 1]).

The heads are single fully connected layers on the backbone's 512-d embedding (paper §3.1 for AU and
expression; the valence-arousal head, squashed by tanh, is our extension).
Its file, ``cache/visual/model.pt``, is written and read by :mod:`pipeline.model_files.visual`.

Example:
    >>> import torch
    >>> arch = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.0}
    >>> model = build_model(arch).eval()
    >>> au, expr, va = model(torch.zeros(2, 3, 112, 112))
    >>> tuple(au.shape), tuple(expr.shape), tuple(va.shape), tuple(model.forward_features(torch.zeros(1, 3, 112, 112)).shape)
    ((2, 12), (2, 7), (2, 2), (1, 512))
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS, NUM_VA
from pipeline.models.registry import create_backbone


class UnitLength(nn.Module):
    """Scale each (..., D) vector to unit L2 length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D) of L2 norm 1 (0 stays 0)."""
        return nn.functional.normalize(x, dim=-1)


class MultiTaskModel(nn.Module):
    """Shared backbone -> 512-d embedding -> (AU logits (B,12), expression logits (B,7), VA (B,2))."""

    def __init__(self, backbone: nn.Module, embed_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.au_head = nn.Linear(embed_dim, NUM_AUS)
        self.expr_head = nn.Linear(embed_dim, NUM_EXPRS)
        # On the unit-length embedding: on the raw one (512 values of unit scale, growing as the AU and
        # expression losses train) one SGD step at the fine-tuning rate moved the VA output by about 1
        # and drove tanh into its flat ends (our choice; the paper has no VA head).
        self.va_head = nn.Sequential(UnitLength(), nn.Linear(embed_dim, NUM_VA))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,112,112) normalised images -> (B,512) embeddings."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,512) embeddings -> (AU logits (B,12), expression logits (B,7), valence-arousal (B,2) in [-1, 1])."""
        return self.au_head(features), self.expr_head(features), torch.tanh(self.va_head(features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,3,112,112) normalised images -> (AU logits (B,12), expression logits (B,7), VA (B,2))."""
        return self.forward_head(self.forward_features(x))


def build_model(arch: Mapping[str, Any]) -> MultiTaskModel:
    """A freshly initialised model from an arch dict ``{"backbone": name, **constructor kwargs}``.

    ``embed_dim`` (default 512) is the heads' input size; every other key goes to the backbone.
    """
    if "backbone" not in arch:
        raise ValueError(f"model arch needs a 'backbone' name, got keys {sorted(arch)}")
    kwargs = {k: v for k, v in arch.items() if k not in ("backbone", "embed_dim")}
    backbone = create_backbone(str(arch["backbone"]), **kwargs)
    return MultiTaskModel(backbone, embed_dim=int(arch.get("embed_dim", EMBEDDING_DIM)))
