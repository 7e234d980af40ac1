"""Train-time augmentation of face crops (paper §4.2): flip, small crop, small colour jitter.

All operations are batched tensor ops (they run on the batch's device) with per-image random
parameters drawn from a CPU ``torch.Generator``, so the same seed gives the same augmented batches:

* horizontal flip with probability ``flip_prob``;
* crop-and-resize: a square crop whose side is a random fraction in ``[1 - crop_scale, 1]`` of the
  image, at a random position, resized back (bilinear) to the input size (112x112);
* lightness (brightness factor in ``[1 - lightness, 1 + lightness]``), saturation (blend with the
  luma image by a factor in ``[1 - saturation, 1 + saturation]``) and hue (rotation of the chroma
  plane in YIQ space by up to ``hue`` of a full turn), then clamping to the valid range.

Inputs are uint8 ``(B,H,W,3)`` RGB (as the frame store returns them) or float ``(B,3,H,W)`` in
[0, 1]; the output has the input's layout and dtype.

Example:
    >>> import torch
    >>> images = torch.randint(0, 256, (4, 112, 112, 3), dtype=torch.uint8)
    >>> out = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(0))
    >>> out.shape, out.dtype
    (torch.Size([4, 112, 112, 3]), torch.uint8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.config import ConfigError

# ITU-R BT.601 luma weights and the RGB -> YIQ transform used for the hue rotation.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; all zeros is the identity."""

    flip_prob: float = 0.5
    crop_scale: float = 0.1
    hue: float = 0.02
    saturation: float = 0.2
    lightness: float = 0.2

    def __post_init__(self) -> None:
        limits = {"flip_prob": 1.0, "crop_scale": 0.5, "hue": 0.5, "saturation": 1.0, "lightness": 1.0}
        for name, upper in limits.items():
            value = getattr(self, name)
            if not 0.0 <= value <= upper:
                raise ConfigError(f"must be in [0, {upper}], got {value}", key=name)

    @property
    def is_identity(self) -> bool:
        """True when no operation is enabled."""
        return not any((self.flip_prob, self.crop_scale, self.hue, self.saturation, self.lightness))


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch; uint8 (B,H,W,3) or float (B,3,H,W) in [0,1] -> same layout and dtype."""
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-d batch, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
    elif images.is_floating_point():
        if images.shape[1] != 3:
            raise ValueError(f"float images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float()
    else:
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")

    params = _draw(images.shape[0], config, generator)
    if not config.is_identity:
        x = _flip(x, params["flip"].to(x.device))
        if config.crop_scale > 0:
            x = _crop_resize(x, params["scale"], params["shift"])
        x = _colour(x, params["lightness"], params["saturation"], params["hue"])

    if images.dtype == torch.uint8:
        return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return x.to(images.dtype)


def _draw(batch: int, config: AugmentConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image random parameters; always the same draws in the same order, whatever is enabled."""
    u = torch.rand(batch, 7, generator=generator, dtype=torch.float64)
    return {
        "flip": u[:, 0] < config.flip_prob,
        "scale": 1.0 - config.crop_scale * u[:, 1],
        "shift": u[:, 2:4] * 2.0 - 1.0,  # position of the crop inside the free margin, in [-1, 1]
        "lightness": 1.0 + config.lightness * (u[:, 4] * 2.0 - 1.0),
        "saturation": 1.0 + config.saturation * (u[:, 5] * 2.0 - 1.0),
        "hue": config.hue * (u[:, 6] * 2.0 - 1.0),
    }


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _crop_resize(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Sample a (scale * side) square at a shifted centre, bilinearly, back onto the full grid."""
    batch = x.shape[0]
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift * (1.0 - scale)[:, None]  # keeps the crop inside the image
    grid = F.affine_grid(theta.to(x.device, torch.float32), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour(x: torch.Tensor, lightness: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation and hue jitter as one per-image 3x3 colour matrix, then clamp."""
    batch = x.shape[0]
    luma = torch.tensor(_LUMA, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    # saturation: s * I + (1 - s) * (rows of luma weights)
    sat = saturation[:, None, None] * eye + (1.0 - saturation)[:, None, None] * luma.expand(3, 3)
    angle = 2.0 * math.pi * hue
    rot = torch.zeros(batch, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    hue_matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ
    matrix = lightness[:, None, None] * (hue_matrix @ sat)
    out = torch.einsum("bij,bjhw->bihw", matrix.to(x.device, torch.float32), x)
    return out.clamp_(0.0, 1.0)
