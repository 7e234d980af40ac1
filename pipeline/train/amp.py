"""How a trainer computes: mixed precision and memory layout.

:class:`Precision` turns the ``amp`` and ``channels_last`` params of a trainer into what the step
needs: an autocast context (``bf16`` or ``fp16``; ``off`` is plain float32), a ``GradScaler`` for
``fp16`` only (bf16 has float32's exponent range, so its gradients do not underflow), and the
channels-last layout for the model and its input batches (on CUDA; the CPU keeps the standard
layout). Weights stay float32 in every mode
(autocast casts per operation), so checkpoints and their readers do not change.

Example:
    >>> import torch
    >>> p = Precision("bf16", channels_last=False, device=torch.device("cpu"))
    >>> with p.autocast():
    ...     y = torch.nn.Linear(4, 2)(torch.ones(1, 4))
    >>> y.dtype, p.scaler is None
    (torch.bfloat16, True)
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager, Literal

import torch
from torch import nn


log = logging.getLogger(__name__)

AmpMode = Literal["off", "bf16", "fp16"]
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device, section: str) -> None:
    """Raise ``ValueError`` when ``device`` cannot train in ``amp``, naming the param and what to use."""
    if amp not in ("off", *AMP_DTYPES):
        raise ValueError(f"{section}.amp must be one of off, bf16, fp16; got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"{section}.amp fp16 needs a CUDA device (training runs on {device}): float16 autocast "
                         f"with loss scaling is a GPU mode; use amp: bf16 on the CPU, or amp: off")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{section}.amp bf16 is not supported by {torch.cuda.get_device_name(device)} "
                         f"(it needs compute capability 8.0 or later); use amp: fp16 or amp: off")


class Precision:
    """A trainer's autocast, gradient scaler and memory layout, from its ``amp`` and ``channels_last`` params.

    ``channels_last`` takes effect on CUDA only; :attr:`channels_last` is the layout actually used.
    """

    def __init__(self, amp: AmpMode, channels_last: bool, device: torch.device, section: str = "params") -> None:
        check_amp(amp, device, section)
        self.amp, self.device = amp, device
        # On the CPU the layout brings no speed, and torch 2.14.1's channels-last backward of an IResNet
        # crashes the process there (segfault or heap corruption, float32 and bf16 alike): a GPU setting
        # left on in params.yaml must not kill a CPU run, so the CPU trains in the standard layout.
        self.channels_last = channels_last and device.type != "cpu"
        if channels_last and not self.channels_last:
            log.warning("%s.channels_last is ignored on the CPU (standard layout used): it brings no speed there "
                        "and torch 2.14.1 crashes in its backward pass; it is meant for GPUs (docs/gpu.md)", section)
        # fp16's 5-bit exponent flushes small gradients to zero unless the loss is scaled up first
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self) -> ContextManager[Any]:
        """The forward pass's context: autocast to bf16/fp16, or nothing for ``off``."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` in the training layout (channels-last when asked; float32 weights either way)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def standard_layout(self, model: nn.Module) -> nn.Module:
        """``model`` back in the default (contiguous NCHW) layout, as checkpoints are written."""
        return model.to(memory_format=torch.contiguous_format) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch (B, C, H, W) in the training layout."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state for a resumable checkpoint (``None`` without a scaler)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (a state saved without a scaler leaves the scaler fresh)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
