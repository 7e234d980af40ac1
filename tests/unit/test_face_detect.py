"""dlib detection and five landmarks on real photographs moving by known transforms (shift, zoom, roll)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.faces.detect import DetectorConfig, FaceDescriber, FaceDetector, five_points, model_file
from pipeline.faces.measure import alignment_errors
from pipeline.faces.moving_photos import astronaut, grace_hopper, moving_photo

@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig())


@pytest.mark.parametrize("photo", [astronaut, grace_hopper], ids=["astronaut", "grace_hopper"])
def test_moving_face_is_found_and_aligned_onto_the_template(detector: FaceDetector, photo) -> None:
    # 40 frames of 320x240, the face turning by up to 30 degrees, zooming from 100 to 130 px, shifting
    result = alignment_errors(detector, photo(), n_frames=40, face_px=100.0, max_angle=30.0, zoom_gain=1.3)
    assert result.found >= 0.95 * result.frames
    assert (result.errors_px <= 3.0).sum() >= 0.95 * result.frames, np.round(result.errors_px, 1)
    assert np.median(result.errors_px) < 1.5
    assert result.template_residual_px < 10.0   # a real face is near the template, not on it


def test_landmarks_sit_on_the_eyes_nose_and_mouth(detector: FaceDetector) -> None:
    (face,) = detector.detect(astronaut())
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    box = face.box
    assert (box.x < face.landmarks[:, 0]).all() and (face.landmarks[:, 0] < box.x + box.w).all()


def test_no_face_in_a_blank_frame(detector: FaceDetector) -> None:
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_descriptor_tells_two_people_apart(detector: FaceDetector) -> None:
    describer = FaceDescriber(detector)
    a, g = astronaut(), grace_hopper()
    frames, _ = moving_photo(a, tuple(detector.detect(a)[0].landmarks.mean(axis=0)), n_frames=3, zoom=(0.9, 1.1))
    same = describer.describe(frames[2], detector.detect(frames[2])[0].landmarks)
    first = describer.describe(a, detector.detect(a)[0].landmarks)
    other = describer.describe(g, detector.detect(g)[0].landmarks)
    assert same.shape == (128,)
    assert np.linalg.norm(first - same) < 0.3 < np.linalg.norm(first - other)


def test_five_points_are_insightfaces_from_the_68() -> None:
    points = np.arange(136, dtype=np.float64).reshape(68, 2)
    five = five_points(points)
    np.testing.assert_allclose(five[0], points[36:42].mean(axis=0))
    np.testing.assert_allclose(five[1], points[42:48].mean(axis=0))
    np.testing.assert_allclose(five[2:], points[[30, 48, 54]])
    with pytest.raises(ValueError, match="68"):
        five_points(points[:5])


def test_missing_model_file_names_the_package() -> None:
    with pytest.raises(FileNotFoundError, match="face_recognition_models"):
        model_file("no_such_model.dat")


@pytest.mark.parametrize("field, value", [("min_face_px", 10), ("min_score", 9.0)])
def test_bad_detector_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        DetectorConfig(**{field: value})


def test_frames_must_be_rgb_uint8(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((10, 10), np.uint8))
