"""Checkpoint files (``torch.save`` dicts of plain containers and tensors): atomic save, one loader.

The shared mechanics under every model's checkpoint (:mod:`pipeline.model_files`): each model's
module says what its dict holds; this one writes and reads the file.

Every ``.pt`` the pipeline reads goes through :func:`load_checkpoint`: ``torch.load`` with
``weights_only=True`` on CPU, errors that name the file, and a refusal of any floating tensor
holding NaN or Inf, so that no stage builds on a diverged model (a NaN model's predictions score
like the trivial baseline and would otherwise pass unnoticed).

Example:
    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "state.pt"
    >>> save_checkpoint(path, {"epoch": 3, "model": {"w": torch.zeros(2)}})
    >>> load_checkpoint(path)["epoch"]
    3
    >>> load_checkpoint(path.with_name("none.pt"), missing_ok=True) is None
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from pipeline.fsio import atomic_path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not a dict, or holding non-finite values."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model it is loaded into."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, dicts) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: str | Path, what: str = "checkpoint", *, missing_ok: bool = False, missing_hint: str = "",
) -> dict[str, Any] | None:
    """The dict saved at ``path`` (``weights_only``, on CPU), after checking every tensor is finite.

    ``what`` names the file's role in messages ("audio model checkpoint"). A missing file raises
    :class:`FileNotFoundError` (with ``missing_hint``, e.g. which stage writes it), or returns ``None``
    when ``missing_ok``. An unreadable file, one that is not a dict, or one holding NaN/Inf in a
    floating tensor raises :class:`CheckpointError`, one line naming the file (and the first bad key).
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(f"{what} not found: {path}" + (f" ({missing_hint})" if missing_hint else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file surfaces as pickle, zip, struct, EOF or runtime errors alike
        raise CheckpointError(
            f"{path}: unreadable {what} ({type(exc).__name__}: {_reason(exc)}); delete it to start over, "
            f"or write it again"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} holds a {type(state).__name__}, expected a dict")
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{path}: {what} holds NaN or Inf in tensor {bad!r}: the training that wrote it diverged; "
            f"delete it and train again with a lower lr (or gradient clipping), or use another checkpoint"
        )
    return state


def _reason(exc: Exception) -> str:
    """One line on why ``torch.load`` failed.

    The weights-only unpickler's message spans many lines and advises ``weights_only=False``, which
    the pipeline never does: keep only its own reason (an unsupported operand or global).
    """
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def first_non_finite(state: Any) -> str | None:
    """The dotted key of the first floating tensor in ``state`` holding NaN or Inf, else ``None``."""
    for key, tensor in _tensors(state, ""):
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                return key
    return None


def _tensors(value: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts, lists and tuples, with its dotted key, in insertion order."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}" if prefix else str(index))


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming the first key (in model order) that is missing,
    extra, or of another shape in ``found`` than in ``expected``; ``where`` starts the message."""
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


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as detached CPU tensors (a DDP wrapper's inner module's), ready to save."""
    inner = module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
