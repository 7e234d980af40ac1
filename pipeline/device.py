"""Choice of the torch device from a ``--device auto|cpu|cuda`` option."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    import torch  # imported here so commands that never compute start without torch

    if name not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def onnx_providers(name: str) -> list[str]:
    """Return onnxruntime execution providers for a device option, best first."""
    import onnxruntime as ort
    import torch

    available = ort.get_available_providers()
    wants_cuda = name in ("auto", "cuda") and torch.cuda.is_available()
    if name == "cuda" and not wants_cuda:
        raise ValueError("device 'cuda' was asked for but no CUDA device is present")
    if wants_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
