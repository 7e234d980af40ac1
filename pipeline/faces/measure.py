"""How well faces are found and aligned in a video of a photograph moving by known transforms.

The photograph's five landmarks are detected once, on an upright still at the video's face size,
and carried into every frame by that frame's known transform; then through the alignment computed
from the frame's own detection. Where they land, against where the alignment puts them on the still,
is the alignment error of the frame in crop pixels (112x112): it measures detection, landmarks and
alignment together, apart from how far the face's own proportions are from the template (reported
separately as ``template_residual_px``).

Example (not run here: a few seconds of detection; tests/unit/faces/test_face_detect.py runs it)::

    result = alignment_errors(FaceDetector(DetectorConfig()), astronaut())
    result.found, result.errors_px.max()
    # (40, 0.56)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.faces.align import ARCFACE_TEMPLATE, invert, similarity_transform, transform_points
from pipeline.faces.detect import FaceDetector
from pipeline.faces.moving_photos import moving_photo, render, similarity


@dataclass(frozen=True)
class AlignmentErrors:
    """Per-frame results on one moving photograph."""

    frames: int
    found: int                   # frames where the face was detected
    errors_px: np.ndarray        # (found,) largest of the five landmarks' errors per frame, crop pixels
    template_residual_px: float  # largest distance of the still's aligned landmarks from the template


def still_landmarks(detector: FaceDetector, photo: np.ndarray, face_px: float,
                    size: tuple[int, int] = (320, 240)) -> tuple[np.ndarray, tuple[float, float], float]:
    """The photo's landmarks found on an upright still with a ``face_px`` face, in photo pixels; the face
    centre; and the zoom giving that face size."""
    faces = detector.detect(photo)
    if not faces:
        raise ValueError(f"no face found in the photograph ({photo.shape})")
    centre = tuple(float(v) for v in faces[0].landmarks.mean(axis=0))
    zoom = face_px / faces[0].box.w
    still = similarity(0.0, zoom, centre, (size[0] / 2, size[1] / 2))
    found = detector.detect(render([(photo, still)], size))
    if not found:
        raise ValueError(f"no face found in the photograph scaled to a {face_px} px face")
    return transform_points(invert(still), found[0].landmarks), centre, zoom


def alignment_errors(detector: FaceDetector, photo: np.ndarray, n_frames: int = 40, face_px: float = 100.0,
                     max_angle: float = 30.0, zoom_gain: float = 1.3) -> AlignmentErrors:
    """Detect and align every frame of ``photo`` turning by up to ``max_angle`` degrees, zooming from a
    ``face_px`` face by ``zoom_gain`` and shifting (:func:`~pipeline.faces.moving_photos.moving_photo`)."""
    landmarks, centre, zoom = still_landmarks(detector, photo, face_px)
    aligned_still = transform_points(similarity_transform(landmarks), landmarks)
    frames, matrices = moving_photo(photo, centre, n_frames=n_frames, max_angle=max_angle,
                                    zoom=(zoom, zoom_gain * zoom))
    errors = []
    for frame, known in zip(frames, matrices):
        faces = detector.detect(frame)
        if faces:
            carried = transform_points(known, landmarks)
            aligned = transform_points(similarity_transform(faces[0].landmarks), carried)
            errors.append(float(np.linalg.norm(aligned - aligned_still, axis=1).max()))
    residual = float(np.linalg.norm(aligned_still - ARCFACE_TEMPLATE, axis=1).max())
    return AlignmentErrors(n_frames, len(errors), np.asarray(errors), residual)
