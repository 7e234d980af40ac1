"""The visual model's input contract: 112x112 RGB uint8 crops -> normalised float32 NCHW.

Same normalisation as insightface arcface_torch: ``(x / 255 - 0.5) / 0.5``, i.e. [-1, 1].

Example:
    >>> import numpy as np
    >>> x = to_model_input(np.full((2, 112, 112, 3), 255, dtype=np.uint8))
    >>> tuple(x.shape), x.dtype, float(x.max())
    ((2, 3, 112, 112), torch.float32, 1.0)
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_SIZE = 112
MEAN = 0.5
STD = 0.5
PREPROCESSING: dict[str, object] = {
    "input_size": [IMAGE_SIZE, IMAGE_SIZE],
    "color": "RGB",
    "layout": "NCHW",
    "formula": "(x / 255 - 0.5) / 0.5",
    "mean": MEAN,
    "std": STD,
}


def to_model_input(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (B,112,112,3) RGB -> float32 (B,3,112,112) in [-1, 1], on ``device`` if given.

    Converting on the target device lets the uint8 batch (4x smaller) travel to the GPU.
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {tensor.dtype}")
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"images must have shape (B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {tuple(tensor.shape)}")
    if device is not None:
        tensor = tensor.to(device, non_blocking=True)
    tensor = tensor.permute(0, 3, 1, 2).float()
    return tensor.div_(255.0).sub_(MEAN).div_(STD).contiguous()
