"""The multi-task visual model: a shared backbone, an AU head (12 logits) and an expression head (7).

Both heads are single fully connected layers on the backbone's 512-d embedding (paper §3.1).
``cache/visual/model.pt`` stores ``{"arch": {...}, "state_dict": {...}, ...}`` in plain containers
and tensors, loadable with :func:`pipeline.checkpoint.load_checkpoint`; :func:`build_from_checkpoint`
rebuilds the model from it.

Example:
    >>> import torch
    >>> arch = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.0}
    >>> model = build_model(arch).eval()
    >>> au, expr = model(torch.zeros(2, 3, 112, 112))
    >>> tuple(au.shape), tuple(expr.shape), tuple(model.forward_features(torch.zeros(1, 3, 112, 112)).shape)
    ((2, 12), (2, 7), (1, 512))
    >>> clone = build_from_checkpoint(checkpoint_dict(model, arch, {"epoch": 3}))
    >>> torch.equal(clone.au_head.weight, model.au_head.weight)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.checkpoint import load_checkpoint
from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS
from pipeline.models.registry import create_backbone

class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model it is loaded into."""


class MultiTaskModel(nn.Module):
    """Shared backbone -> 512-d embedding -> (AU logits (B,12), expression logits (B,7))."""

    def __init__(self, backbone: nn.Module, embed_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.au_head = nn.Linear(embed_dim, NUM_AUS)
        self.expr_head = nn.Linear(embed_dim, NUM_EXPRS)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,112,112) normalised images -> (B,512) embeddings."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,512) embeddings -> (AU logits (B,12), expression logits (B,7))."""
        return self.au_head(features), self.expr_head(features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,112,112) normalised images -> (AU logits (B,12), expression logits (B,7))."""
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


def checkpoint_dict(model: nn.Module, arch: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"arch", "state_dict", **extra}`` with CPU tensors, ready for ``torch.save``."""
    extra = dict(extra or {})
    clash = sorted({"arch", "state_dict"} & set(extra))
    if clash:
        raise ValueError(f"extra checkpoint entries may not be named {clash}")
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    state = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
    return {"arch": dict(arch), "state_dict": state, **extra}


def build_from_checkpoint(ckpt: Mapping[str, Any]) -> MultiTaskModel:
    """Rebuild a :class:`MultiTaskModel` from :func:`checkpoint_dict` output (weights loaded)."""
    missing = [key for key in ("arch", "state_dict") if key not in ckpt]
    if missing:
        raise ValueError(f"not a visual model checkpoint: missing {missing}; found keys {sorted(ckpt)}")
    model = build_model(ckpt["arch"])
    _check_state_dict(model.state_dict(), ckpt["state_dict"], where=f"checkpoint (arch {ckpt['arch']})")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def load_pretrained_backbone(model: MultiTaskModel, path: str | Path) -> None:
    """Load an insightface arcface_torch backbone state_dict into ``model``'s backbone
    (see :func:`load_backbone_state`)."""
    load_backbone_state(model.backbone, path)


def load_backbone_state(backbone: nn.Module, path: str | Path) -> None:
    """Load an insightface arcface_torch backbone state_dict (``module.`` prefix allowed) into ``backbone``.

    The checkpoint must match the backbone exactly (strict): any depth and width load when both
    are the same as the checkpoint's (e.g. a ``pretrain-face`` backbone at width 0.125); a wrong
    depth or width raises :class:`CheckpointMismatchError` naming the first mismatching key, both
    shapes and the backbone it was loaded into.
    """
    path = Path(path)
    state = load_checkpoint(path, "pretrained backbone checkpoint")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    state = {_strip_prefix(k, "module."): v for k, v in state.items()}
    try:
        _check_state_dict(backbone.state_dict(), state, where=str(path))
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(
            f"{exc}; the checkpoint is of another backbone or width than the {_describe(backbone)} it was "
            f"loaded into (backbone and width_mult must be those it was trained with)"
        ) from None
    backbone.load_state_dict(state, strict=True)


def _describe(backbone: nn.Module) -> str:
    """``IResNet (blocks 2,2,2,2, width_mult 0.125)`` for an IResNet, else the class name."""
    layers, width = getattr(backbone, "layers", None), getattr(backbone, "width_mult", None)
    if layers is None or width is None:
        return type(backbone).__name__
    return f"{type(backbone).__name__} (blocks {','.join(map(str, layers))}, width_mult {width})"


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def _check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], where: str) -> None:
    """Raise naming the first key (in model order) that is missing, extra, or of another shape."""
    for key, tensor in expected.items():
        if key not in found:
            raise CheckpointMismatchError(f"{where}: key {key!r} {tuple(tensor.shape)} is missing from the checkpoint")
        value = found[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointMismatchError(
                f"{where}: key {key!r} has shape {shape} in the checkpoint but {tuple(tensor.shape)} in the model"
            )
    extra = [key for key in found if key not in expected]
    if extra:
        raise CheckpointMismatchError(f"{where}: unexpected key {extra[0]!r} ({len(extra)} unexpected in all)")
