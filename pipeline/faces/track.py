"""Every face of a video followed across frames, with stable ids.

Detection runs every ``detect_every`` frames (and on every frame while no face is followed, or when a
followed face is lost); in the frames between, each followed face's landmarks are fitted again starting from its previous frame's
landmarks (:meth:`~pipeline.faces.detect.FaceDetector.refine`), which is much cheaper than a search
and keeps faces the detector misses for a few frames (a turned or rolled head, motion blur).

- **Following**: the re-fitted face is kept while its aligned crop still looks like the face's last
  detected crop (normalised cross-correlation of 28x28 grey crops >= ``min_similarity``); otherwise
  the face is lost. While two followed faces overlap (a crossing), each is also checked against its
  identity descriptor, so one does not take over the other.
- **Association** at a detection frame: a detection that overlaps exactly one followed face (box IoU
  >= ``min_iou``), which overlaps no other detection, continues it; every other detection is compared
  by identity descriptor (dlib's face-recognition network, :class:`~pipeline.faces.detect.FaceDescriber`)
  with the followed faces left and with the faces lost in the last ``forget_frames`` frames, nearest
  first, and continues the nearest one closer than ``max_distance`` (re-identification after an
  occlusion or a crossing); the rest start new faces if the detector scores them at least
  ``min_start_score`` (higher than what continues a face: low-scoring false detections, e.g. on
  clothing, then start nothing, while a known face turned away still scores enough to continue). Followed faces no detection continued are
  followed as between detections.
- **Ids**: 0, 1, 2... in order of first appearance; a face keeps its id for the whole video.

Example:
    >>> from pipeline.faces.moving_photos import astronaut
    >>> tracker = FaceTracker(TrackerConfig())
    >>> [(face.face_id, face.detected) for face in tracker.update(astronaut())]
    [(0, True)]
    >>> [(face.face_id, face.detected) for face in tracker.update(astronaut())]
    [(0, False)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from pipeline.config import ConfigError
from pipeline.faces.align import ARCFACE_TEMPLATE, align_face, invert, similarity_transform, transform_points
from pipeline.faces.detect import Box, DetectorConfig, Face, FaceDescriber, FaceDetector

_APPEARANCE_PX = 28   # side of the grey thumbnail compared between frames
# dlib's detection box around a face in template pixels (centre, side), to give followed faces a box
_TEMPLATE_BOX_CENTRE, _TEMPLATE_BOX_SIDE = np.array([[56.0, 76.0]]), 82.0


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of face following and identities (the ``predict.tracking`` params)."""

    detect_every: int = 10         # full detection every this many frames; faces are followed between
    min_similarity: float = 0.5    # a followed face is lost when its crop correlates less with its last detection
    min_iou: float = 0.3           # box overlap by which a detection continues the one followed face it overlaps
    max_distance: float = 0.5      # identity-descriptor distance under which a detection continues a face
    min_start_score: float = 0.5   # a detection starts a new face only when the detector scores it this high
    forget_frames: int = 250       # a lost face can be re-identified for this many frames

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ConfigError(f"must be >= 1, got {self.detect_every}", key="detect_every")
        if not -1.0 <= self.min_similarity < 1.0:
            raise ConfigError(f"must be in [-1, 1), got {self.min_similarity}", key="min_similarity")
        if not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.min_iou}", key="min_iou")
        if self.max_distance <= 0.0:
            raise ConfigError(f"must be > 0, got {self.max_distance}", key="max_distance")
        if not -2.0 <= self.min_start_score <= 5.0:
            raise ConfigError(f"must be in [-2, 5], got {self.min_start_score}", key="min_start_score")
        if self.forget_frames < 0:
            raise ConfigError(f"must be >= 0, got {self.forget_frames}", key="forget_frames")


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame: its id, box, five landmarks, aligned 112x112 crop, and how it was found."""

    face_id: int
    box: Box
    landmarks: np.ndarray   # (5, 2) insightface order, frame pixels
    crop: np.ndarray        # (112, 112, 3) uint8 RGB, aligned to the arcface template
    score: float            # the detector's score of this face's latest detection
    detected: bool          # True when detected in this frame, False when followed from the previous one


@dataclass
class _Track:
    face_id: int
    landmarks: np.ndarray
    box: Box
    crop: np.ndarray
    score: float
    appearance: np.ndarray          # thumbnail of the latest detected crop
    descriptor: np.ndarray | None   # identity descriptor, computed when first needed
    last_seen: int


class FaceTracker:
    """Detection, following and identities of all faces, one frame at a time (see the module doc)."""

    def __init__(self, config: TrackerConfig, detector: FaceDetector | None = None) -> None:
        self.config = config
        self.detector = detector or FaceDetector(DetectorConfig())
        self._describer: FaceDescriber | None = None
        self._tracks: list[_Track] = []
        self._frame = 0
        self._next_id = 0

    def update(self, frame: np.ndarray) -> list[TrackedFace]:
        """The faces of the next frame, by id."""
        index = self._frame
        self._frame += 1
        active = [t for t in self._tracks if t.last_seen == index - 1]
        detected: set[int] = set()
        searched = not active or index % self.config.detect_every == 0
        if searched:
            detected = self._associate(frame, self.detector.detect(frame), active, index)
        lost = [t for t in active if t.face_id not in detected and not self._follow(frame, t, active, index)]
        if lost and not searched:
            # a face slipped away between detections: search now rather than wait for the next detection,
            # leaving out what overlaps the faces still followed
            followed = [t for t in active if t.last_seen == index]
            faces = [f for f in self.detector.detect(frame)
                     if all(f.box.iou(t.box) < self.config.min_iou for t in followed)]
            detected = self._associate(frame, faces, lost, index)
        self._tracks = [t for t in self._tracks if index - t.last_seen <= self.config.forget_frames]
        return [TrackedFace(t.face_id, t.box, t.landmarks, t.crop, t.score, t.face_id in detected)
                for t in sorted(self._tracks, key=lambda t: t.face_id) if t.last_seen == index]

    def _associate(self, frame: np.ndarray, faces: list[Face], active: list[_Track], index: int) -> set[int]:
        """Continue or start a face for every detection; return the ids detected in this frame."""
        cfg = self.config
        crops = [align_face(frame, face.landmarks) for face in faces]
        claimed: dict[int, _Track] = {}
        for i, face in enumerate(faces):   # unambiguous overlaps
            overlapping = [t for t in active if face.box.iou(t.box) > 0.0]
            if len(overlapping) == 1 and face.box.iou(overlapping[0].box) >= cfg.min_iou:
                track = overlapping[0]
                if sum(other.box.iou(track.box) > 0.0 for other in faces) == 1:
                    claimed[i] = track
        # every face got a descriptor when it started, so lost and followed faces can all be compared
        candidates = [t for t in self._tracks
                      if t not in claimed.values() and t.last_seen < index and t.descriptor is not None]
        # a descriptor costs more than the detection: only for detections that may continue or start a face
        rest = [i for i in range(len(faces))
                if i not in claimed and (candidates or faces[i].score >= cfg.min_start_score)]
        descriptors = {i: self._describe(frame, faces[i].landmarks) for i in rest}
        pairs = sorted((float(np.linalg.norm(descriptors[i] - t.descriptor)), i, t.face_id)
                       for i in rest for t in candidates)
        by_id = {t.face_id: t for t in candidates}
        for distance, i, face_id in pairs:
            if distance < cfg.max_distance and i not in claimed and face_id in by_id:
                claimed[i] = by_id.pop(face_id)
        touched: set[int] = set()
        for i, face in enumerate(faces):
            track = claimed.get(i)
            if track is None and face.score < cfg.min_start_score:
                continue
            if track is None:
                track = _Track(self._next_id, face.landmarks, face.box, crops[i], face.score,
                               _appearance(crops[i]), descriptors[i], index)
                self._next_id += 1
                self._tracks.append(track)
            track.landmarks, track.box, track.crop, track.score = face.landmarks, face.box, crops[i], face.score
            track.appearance, track.last_seen = _appearance(crops[i]), index
            if i in descriptors:
                track.descriptor = descriptors[i]
            touched.add(track.face_id)
        return touched

    def _follow(self, frame: np.ndarray, track: _Track, active: list[_Track], index: int) -> bool:
        """Re-fit a face from its previous landmarks; keep it (True) if it still looks like itself."""
        landmarks = self.detector.refine(frame, track.landmarks)
        crop = align_face(frame, landmarks)
        if float(_appearance(crop) @ track.appearance) < self.config.min_similarity:
            return False
        box = _box_of(landmarks)
        crowded = any(other is not track and other.box.iou(box) > 0.0 for other in active)
        if crowded and track.descriptor is not None:
            distance = float(np.linalg.norm(self._describe(frame, landmarks) - track.descriptor))
            if distance >= self.config.max_distance:
                return False
        track.landmarks, track.box, track.crop, track.last_seen = landmarks, box, crop, index
        return True

    def _describe(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        if self._describer is None:
            self._describer = FaceDescriber(self.detector)
        return self._describer.describe(frame, landmarks)


def track_video(frames: Iterable[np.ndarray], config: TrackerConfig,
                detector: DetectorConfig = DetectorConfig()) -> Iterator[list[TrackedFace]]:
    """The faces of every frame of a sequence, by id (a generator: frames are not held)."""
    tracker = FaceTracker(config, FaceDetector(detector))
    for frame in frames:
        yield tracker.update(frame)


def _appearance(crop: np.ndarray) -> np.ndarray:
    """A zero-mean, unit-norm grey thumbnail of an aligned crop, for cross-correlation."""
    grey = Image.fromarray(crop).convert("L").resize((_APPEARANCE_PX, _APPEARANCE_PX), Image.Resampling.BILINEAR)
    vector = np.asarray(grey, np.float32).ravel()
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _box_of(landmarks: np.ndarray) -> Box:
    """The axis-aligned box dlib's detector would draw around a face with these landmarks (approximately)."""
    to_frame = invert(similarity_transform(landmarks, ARCFACE_TEMPLATE))
    (cx, cy), = transform_points(to_frame, _TEMPLATE_BOX_CENTRE)
    side = _TEMPLATE_BOX_SIDE * float(np.hypot(*to_frame[:, 0]))
    return Box(cx - side / 2, cy - side / 2, side, side)
