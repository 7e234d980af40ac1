"""Box-based face alignment: a square crop around a detected face box, resized to 112x112 RGB.

This is the input contract of the visual model (arcface-style 112x112 RGB crops, see
``pipeline.models.preprocess``). The alignment is box-based, not landmark-based: the crop is the
detector's box grown by ``margin`` on every side and made square around its centre, with no rotation
to level the eyes. Parts of the square outside the frame are filled with black, as the Aff-Wild2
``cropped_aligned`` crops are at frame borders.

Example:
    >>> import numpy as np
    >>> frame = np.zeros((240, 320, 3), np.uint8)
    >>> crop_face(frame, Box(x=100, y=50, w=60, h=60)).shape
    (112, 112, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_SIZE = 112


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the full frame: top-left corner (x, y), width and height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        """Area in square pixels."""
        return max(self.w, 0.0) * max(self.h, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre (x, y)."""
        return self.x + self.w / 2, self.y + self.h / 2

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when disjoint)."""
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def square_crop_box(box: Box, margin: float) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) square around ``box`` grown by ``margin`` x its side on each side."""
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"face box must have a positive size, got {box}")
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.centre
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(1, int(round(side)))
    return left, top, left + size, top + size


def crop_face(frame: np.ndarray, box: Box, margin: float = 0.2, size: int = CROP_SIZE) -> np.ndarray:
    """Crop the square around ``box`` from an (H, W, 3) uint8 RGB frame and resize it to (size, size, 3)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    # PIL fills the parts of the crop outside the image with zeros (black).
    crop = Image.fromarray(frame).crop(square_crop_box(box, margin))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
