"""The face-recognition backbone's files (``pretrain-face``): ``backbone.pth`` and ``backbone.json``.

``backbone.pth`` is a plain backbone state dict with insightface arcface_torch's key names (a
``module.`` prefix is accepted on reading, as arcface_torch's DDP checkpoints carry it);
``backbone.json`` beside it records the arch (``backbone``, ``width_mult``), the embedding width,
the input contract and how the weights were made (``epoch``, ``init``, ``margin``).
``pretrain-face`` writes both with :func:`publish_backbone`; ``finetune-visual`` (and a
``pretrain-face`` run from ``init``) read the weights with :func:`load_backbone_state`.

Example:
    >>> import tempfile
    >>> from pipeline.models.registry import create_backbone
    >>> arch = {"backbone": "iresnet18", "width_mult": 0.0625}
    >>> out = Path(tempfile.mkdtemp()) / "pretrain"
    >>> trained = create_backbone("iresnet18", width_mult=0.0625)
    >>> publish_backbone(trained, arch, {"epoch": 1, "init": None, "margin": "cosface"}, out)
    >>> sorted(p.name for p in out.iterdir())
    ['.mmaffect-output', 'backbone.json', 'backbone.pth']
    >>> fresh = create_backbone("iresnet18", width_mult=0.0625)
    >>> load_backbone_state(fresh, out / BACKBONE_FILE)
    >>> torch.equal(fresh.conv1.weight, trained.conv1.weight)
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.fsio import atomic_path
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files.checkpoint import CheckpointMismatchError, check_state_dict, cpu_state, load_checkpoint
from pipeline.models.preprocess import PREPROCESSING

BACKBONE_FILE, ARCH_FILE = "backbone.pth", "backbone.json"


def publish_backbone(backbone: nn.Module, arch: Mapping[str, Any], made: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write ``out_dir/backbone.pth`` (plain state dict, arcface_torch key names) and ``backbone.json``
    (``arch``, input contract, and ``made``: epoch, init, margin), replacing ``out_dir`` atomically."""
    state = cpu_state(backbone)
    record = {**arch, "embedding_dim": EMBEDDING_DIM, "preprocessing": PREPROCESSING, **made}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        torch.save(state, tmp / BACKBONE_FILE)
        (tmp / ARCH_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def load_backbone_state(backbone: nn.Module, path: str | Path) -> None:
    """Load an insightface arcface_torch backbone state_dict (``module.`` prefix allowed) into ``backbone``.

    The checkpoint must match the backbone exactly (strict): any depth and width load when both
    are the same as the checkpoint's (e.g. a ``pretrain-face`` backbone at width 0.125); a wrong
    depth or width raises :class:`~pipeline.model_files.checkpoint.CheckpointMismatchError` naming
    the first mismatching key, both shapes and the backbone it was loaded into.
    """
    path = Path(path)
    state = load_checkpoint(path, "pretrained backbone checkpoint")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    state = {_strip_prefix(k, "module."): v for k, v in state.items()}
    try:
        check_state_dict(backbone.state_dict(), state, where=str(path))
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
