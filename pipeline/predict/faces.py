"""Offline face detection and tracking for raw videos, with scikit-image's LBP frontal-face cascade.

The detector is ``skimage.feature.Cascade`` loaded from the cascade file that scikit-image installs
(``skimage.data.lbp_frontal_face_cascade_filename()``): nothing is downloaded. Each frame is
converted to grey and downscaled so its longer side is at most ``max_side`` pixels before the
multi-scale search (speed), and boxes are mapped back to full-frame pixels.

:class:`FaceTracker` turns per-frame detections into one face box per frame:

- choice: each detection is scored ``area * (1 + 2 * IoU(previous box))``, so the largest face wins
  unless a slightly smaller one continues the face tracked so far (stable over frames);
- smoothing: a detection overlapping the previous box is blended with it,
  ``new = smoothing * detection + (1 - smoothing) * previous`` (``smoothing = 1`` turns it off);
  a detection elsewhere starts a new track;
- hold: a frame without a detection reuses the previous box for up to ``hold_frames`` frames
  (the cascade misses single frames on blur and turned heads); after that the frame has no face;
- speed: while a face is tracked, the search runs only in a region around it (the box grown by its
  side on every side, scaled so the face is about 48 px, faces of 2/3 to 3/2 of its size); the
  whole frame is searched every ``redetect_every`` frames and whenever the local search misses.

Example:
    >>> import skimage.data
    >>> tracker = FaceTracker(DetectorConfig())
    >>> box = tracker.update(skimage.data.astronaut())
    >>> 150 < box.centre[0] < 290 and 60 < box.centre[1] < 200   # the astronaut's face
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

from pipeline.config import ConfigError
from pipeline.predict.align import Box

_LOCAL_FACE_PX = 48  # the tracked face's size in the local search image


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the cascade search and of the per-frame tracking."""

    max_side: int = 320            # frames are downscaled so the longer side is at most this
    scale_factor: float = 1.2      # window growth between search scales
    step_ratio: float = 1.0        # search step multiplier (1 = exhaustive, larger = faster, coarser)
    min_size: int = 24             # smallest face side searched, in pixels of the downscaled frame
    min_neighbours: int = 4        # overlapping raw detections needed to accept a face
    smoothing: float = 0.6         # weight of the new detection in the box blend (1 = no smoothing)
    hold_frames: int = 5           # frames a lost face keeps its previous box
    redetect_every: int = 10       # search the whole frame every this many frames while tracking

    def __post_init__(self) -> None:
        if self.max_side < 32:
            raise ConfigError(f"must be >= 32, got {self.max_side}", key="max_side")
        if self.scale_factor <= 1.0:
            raise ConfigError(f"must be > 1, got {self.scale_factor}", key="scale_factor")
        if self.step_ratio < 1.0:
            raise ConfigError(f"must be >= 1, got {self.step_ratio}", key="step_ratio")
        if self.min_size < 8:
            raise ConfigError(f"must be >= 8, got {self.min_size}", key="min_size")
        if self.min_neighbours < 1:
            raise ConfigError(f"must be >= 1, got {self.min_neighbours}", key="min_neighbours")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.smoothing}", key="smoothing")
        if self.hold_frames < 0:
            raise ConfigError(f"must be >= 0, got {self.hold_frames}", key="hold_frames")
        if self.redetect_every < 1:
            raise ConfigError(f"must be >= 1, got {self.redetect_every}", key="redetect_every")


class FaceDetector:
    """All frontal faces in one RGB frame, as boxes in full-frame pixels."""

    def __init__(self, config: DetectorConfig) -> None:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        self.config = config
        self._cascade = Cascade(lbp_frontal_face_cascade_filename())

    def detect(self, frame: np.ndarray, around: Box | None = None) -> list[Box]:
        """Detect faces in an (H, W, 3) uint8 RGB frame; with ``around``, only near that box and size."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        cfg = self.config
        grey = Image.fromarray(frame).convert("L")
        if around is None:
            scale = min(1.0, cfg.max_side / max(grey.size))
            return self._search(grey, (0, 0), scale, cfg.min_size, None)
        side = max(around.w, around.h)
        left, top = int(around.x - side), int(around.y - side)
        region = grey.crop((left, top, int(around.x + around.w + side), int(around.y + around.h + side)))
        scale = _LOCAL_FACE_PX / side
        return self._search(region, (left, top), scale, int(_LOCAL_FACE_PX / 1.5), int(_LOCAL_FACE_PX * 1.5))

    def _search(self, grey: Image.Image, origin: tuple[int, int], scale: float, min_size: int,
                max_size: int | None) -> list[Box]:
        """Run the cascade on ``grey`` resized by ``scale``; boxes back in frame pixels (``origin`` = offset)."""
        width, height = grey.size
        if scale != 1.0:
            grey = grey.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
        image = np.asarray(grey, dtype=np.float32) / 255.0
        largest = min(image.shape) if max_size is None else min(max_size, *image.shape)
        if largest < min_size:
            return []
        found = self._cascade.detect_multi_scale(
            image, scale_factor=self.config.scale_factor, step_ratio=self.config.step_ratio,
            min_size=(min_size, min_size), max_size=(largest, largest),
            min_neighbor_number=self.config.min_neighbours,
        )
        x0, y0 = origin
        return [Box(x=x0 + d["c"] / scale, y=y0 + d["r"] / scale, w=d["width"] / scale, h=d["height"] / scale)
                for d in found]


class FaceTracker:
    """One face box per frame from per-frame detections: choice, smoothing and hold (see module doc)."""

    def __init__(self, config: DetectorConfig, detector: FaceDetector | None = None) -> None:
        self.config = config
        self.detector = detector or FaceDetector(config)
        self._box: Box | None = None
        self._missed = 0
        self._frame = 0

    def update(self, frame: np.ndarray) -> Box | None:
        """Detect in the next frame and return its face box, or ``None`` when it has no face."""
        local = self._box is not None and self._frame % self.config.redetect_every != 0
        self._frame += 1
        detections = self.detector.detect(frame, around=self._box) if local else []
        if not detections:
            detections = self.detector.detect(frame)
        return self.update_with(detections)

    def update_with(self, detections: list[Box]) -> Box | None:
        """Advance the track with the detections of the next frame (no image needed)."""
        previous = self._box
        if not detections:
            self._missed += 1
            if previous is not None and self._missed > self.config.hold_frames:
                self._box = None
            return self._box
        self._missed = 0
        best = max(detections, key=lambda d: d.area * (1.0 + 2.0 * (d.iou(previous) if previous else 0.0)))
        if previous is not None and best.iou(previous) > 0.0:
            a = self.config.smoothing
            best = Box(
                x=a * best.x + (1 - a) * previous.x, y=a * best.y + (1 - a) * previous.y,
                w=a * best.w + (1 - a) * previous.w, h=a * best.h + (1 - a) * previous.h,
            )
        self._box = best
        return best


def track_faces(frames: Iterable[np.ndarray], config: DetectorConfig) -> list[Box | None]:
    """The face box of every frame of a sequence (``None`` where no face is found or held)."""
    tracker = FaceTracker(config)
    return [tracker.update(frame) for frame in frames]
