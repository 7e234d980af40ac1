"""Resumable training state: atomic save, tolerant load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.fsio import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, dicts) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load a checkpoint saved by :func:`save_checkpoint`; ``None`` when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, struct.error, UnpicklingError...
        raise ValueError(f"{path}: unreadable checkpoint ({exc}); delete it to start over") from exc
