"""Face detection and five landmarks with dlib: its HOG frontal-face detector and its 68-point shape predictor.

Both models ship inside installed packages, nothing is downloaded: the detector is built into dlib
(the ``dlib-bin`` wheel), the shape predictor is ``shape_predictor_68_face_landmarks.dat`` of the
``face_recognition_models`` package. The five landmarks the alignment needs, in insightface's order,
are derived from the 68 iBUG points exactly as insightface defines them (indices 0-based):

- left eye centre (as seen in the image): mean of the eye contour points 36-41;
- right eye centre: mean of points 42-47;
- nose tip: point 30;
- left and right mouth corner: points 48 and 54.

The 68 points are fitted twice: in the detector's box, then again in a canonical chip, the frame
warped so that this first fit lands on the arcface template at twice its size, upright, with a fixed
box (:func:`FaceDetector.refine`). The shape predictor then always sees an upright face of one size
in one box, whatever the face's roll, size and box jitter; on the moving-photograph tests this
brings the frame-to-frame landmark error from 3-4 px to well under 1 px on most frames. Between two
detections a tracked face is followed the same way from its previous landmarks, without a box.

dlib's smaller 5-point model is not used: its points are the two corners of each eye and the base of
the nose (68-point indices 45, 42, 36, 39, 33), with no mouth corners and the nose base, not the tip,
so three of insightface's five points would be missing or moved.

Example:
    >>> import skimage.data
    >>> faces = FaceDetector(DetectorConfig()).detect(skimage.data.astronaut())
    >>> len(faces), faces[0].landmarks.shape
    (1, (5, 2))
    >>> x, y = faces[0].landmarks[0]   # the eye on the image's left
    >>> bool(190 < x < 215 and 90 < y < 115)
    True
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config import ConfigError
from pipeline.faces.align import ARCFACE_TEMPLATE, invert, similarity_transform, transform_points, warp_image

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
HOG_WINDOW_PX = 80  # the side of dlib's HOG detection window: the smallest face it finds unscaled

# The canonical chip of the second fit: the template at twice its size, shifted by 16 px, in a
# 256x256 image, and the box dlib's detector draws around such a face (measured on the two test
# photographs: about 82 template pixels wide, centred on (56, 76); our choice, at twice the size).
_CHIP_SIZE, _CHIP_SCALE, _CHIP_OFFSET = 256, 2.0, 16.0
_CHIP_BOX = (44, 84, 212, 252)   # left, top, right, bottom in chip pixels
_DESCRIPTOR_CHIP, _DESCRIPTOR_PADDING = 150, 0.25   # dlib's face-recognition input

# insightface's five points from the 68 iBUG landmarks: eye contours averaged, nose tip, mouth corners
_LEFT_EYE, _RIGHT_EYE, _NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = slice(36, 42), slice(42, 48), 30, 48, 54


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


@dataclass(frozen=True)
class Face:
    """One detected face: its box, the detector's score and five landmarks (insightface order, (5, 2) x/y)."""

    box: Box
    score: float
    landmarks: np.ndarray


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the HOG face search (the ``predict.detector`` / ``crop`` params section)."""

    min_face_px: int = 80      # smallest face side searched, in frame pixels (frames are rescaled by 80 / this)
    min_score: float = 0.0     # detections scoring below this are dropped (dlib's own threshold is 0)
    # smallest face side searched as a share of the frame's height, when that is more than min_face_px:
    # large frames are searched downscaled (the HOG cost goes with the pixels), small ones unchanged
    min_face_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not 20 <= self.min_face_px <= 2000:
            raise ConfigError(f"must be in [20, 2000], got {self.min_face_px}", key="min_face_px")
        if not 0.0 <= self.min_face_fraction <= 0.5:
            raise ConfigError(f"must be in [0, 0.5], got {self.min_face_fraction}", key="min_face_fraction")
        if not -2.0 <= self.min_score <= 5.0:
            raise ConfigError(f"must be in [-2, 5], got {self.min_score}", key="min_score")


def model_file(name: str) -> Path:
    """The path of model file ``name`` shipped in the ``face_recognition_models`` package.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name}: the {MODELS_PACKAGE} package that ships it is not installed (pip install {MODELS_PACKAGE})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {MODELS_PACKAGE} package; reinstall it")
    return path


def import_dlib() -> Any:
    """The ``dlib`` module, or an ImportError saying which package provides it."""
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"face detection needs dlib: pip install dlib-bin ({exc})") from exc
    return dlib


@lru_cache(maxsize=None)
def _models() -> tuple[Any, Any]:
    """The HOG detector and the 68-point shape predictor, loaded once per process (about 100 MB)."""
    dlib = import_dlib()
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_file(LANDMARKS_MODEL)))


def check_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous (H, W, 3) uint8 RGB array, or a ValueError saying what it is.

    dlib reads an image as packed rows: given a view with padded rows (what PyAV's ``to_ndarray``
    returns for many widths) or a strided slice, it would search pixels that are not the frame's.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


class FaceDetector:
    """All frontal faces of an RGB frame, each with its five landmarks."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._dlib = import_dlib()
        self._hog, self._shape = _models()

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Detect the faces of an (H, W, 3) uint8 RGB frame, most confident first."""
        frame = check_frame(frame)
        scale = self.search_scale(frame.shape[0])
        search = frame
        if scale != 1.0:
            height, width = frame.shape[:2]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            search = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
        rects, scores, _ = self._hog.run(search, 0, self.config.min_score)
        faces = []
        for rect, score in sorted(zip(rects, scores), key=lambda pair: -pair[1]):
            box = Box(rect.left() / scale, rect.top() / scale, rect.width() / scale, rect.height() / scale)
            faces.append(Face(box, float(score), self.landmarks(frame, box)))
        return faces

    def search_scale(self, height: int) -> float:
        """The factor a frame ``height`` pixels high is resized by before the HOG search: the smallest face
        searched (``min_face_px``, or ``min_face_fraction`` of the height if larger) becomes dlib's 80 px window."""
        smallest = max(float(self.config.min_face_px), self.config.min_face_fraction * height)
        return HOG_WINDOW_PX / smallest

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray:
        """The five landmarks (insightface order, (5, 2)) of the face in ``box`` of ``frame``: fitted in the
        box, then refined in the canonical chip."""
        rect = self._dlib.rectangle(int(round(box.x)), int(round(box.y)),
                                    int(round(box.x + box.w)), int(round(box.y + box.h)))
        return self.refine(frame, _points(self._shape(frame, rect)))

    def refine(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Fit the five landmarks again in the canonical chip made from ``landmarks`` (a first fit, or the
        previous frame's landmarks of a tracked face)."""
        matrix, _, shape = self.fit_in_chip(frame, landmarks)
        return transform_points(invert(matrix), _points(shape))

    def fit_in_chip(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """Warp the face with these landmarks into the canonical chip and fit the 68 points there.

        Returns the frame-to-chip (2, 3) matrix, the (256, 256, 3) chip and dlib's 68-point shape in
        chip pixels.
        """
        matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * _CHIP_SCALE + _CHIP_OFFSET)
        chip = warp_image(check_frame(frame), matrix, (_CHIP_SIZE, _CHIP_SIZE))
        return matrix, chip, self._shape(chip, self._dlib.rectangle(*_CHIP_BOX))


class FaceDescriber:
    """A 128-d identity descriptor of a face (dlib's face-recognition ResNet, from ``face_recognition_models``).

    Two faces of one person lie closer than about 0.6 (Euclidean), as dlib documents for this model.
    """

    def __init__(self, detector: FaceDetector) -> None:
        self._detector = detector
        self._dlib = import_dlib()
        self._net = _descriptor_net()

    def describe(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The (128,) float32 descriptor of the face with these five landmarks."""
        _, chip, shape = self._detector.fit_in_chip(frame, landmarks)
        # dlib's own alignment for its network: a 150x150 chip with 25 % padding from the 68 points
        face = self._dlib.get_face_chip(chip, shape, size=_DESCRIPTOR_CHIP, padding=_DESCRIPTOR_PADDING)
        return np.asarray(self._net.compute_face_descriptor(face), dtype=np.float32)


@lru_cache(maxsize=None)
def _descriptor_net() -> Any:
    return import_dlib().face_recognition_model_v1(str(model_file(DESCRIPTOR_MODEL)))


def _points(shape: Any) -> np.ndarray:
    """insightface's five points of a dlib 68-point shape."""
    return five_points(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64))


def five_points(points68: np.ndarray) -> np.ndarray:
    """insightface's five landmarks (eye centres, nose tip, mouth corners) from the (68, 2) iBUG points."""
    points68 = np.asarray(points68, np.float64)
    if points68.shape != (68, 2):
        raise ValueError(f"need (68, 2) landmarks, got {points68.shape}")
    return np.stack([
        points68[_LEFT_EYE].mean(axis=0), points68[_RIGHT_EYE].mean(axis=0),
        points68[_NOSE_TIP], points68[_MOUTH_LEFT], points68[_MOUTH_RIGHT],
    ])
