"""dlib detection and five landmarks on real photographs moving by known transforms (shift, zoom, roll)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.faces.detect import DetectorConfig, FaceDescriber, FaceDetector, five_points, model_file
from pipeline.faces.measure import alignment_errors
from pipeline.faces.moving_photos import astronaut, grace_hopper, moving_photo, render, similarity

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


def test_downscaled_search_maps_the_face_back_to_full_resolution(detector: FaceDetector) -> None:
    # a 180 px face in a 640x720 frame: searched at 80 / (0.25 * 720) = 0.44 of the frame's size
    photo = astronaut()
    face = detector.detect(photo)[0]
    frame = render([(photo, similarity(10.0, 180.0 / face.box.w, tuple(face.landmarks.mean(axis=0)), (400.0, 300.0)))],
                   (640, 720))
    downscaled = FaceDetector(DetectorConfig(min_face_fraction=0.25))
    assert downscaled.search_scale(720) == pytest.approx(80 / 180)
    (full,) = detector.detect(frame)
    (small,) = downscaled.detect(frame)
    assert small.box.iou(full.box) > 0.7 and 150 < small.box.w < 230, (small.box, full.box)
    # the landmarks are fitted in the full-resolution frame either way
    assert np.abs(small.landmarks - full.landmarks).max() < 2.0


def test_small_frames_are_not_searched_downscaled() -> None:
    detector = FaceDetector(DetectorConfig(min_face_px=80, min_face_fraction=0.15))
    assert detector.search_scale(240) == 1.0                   # 0.15 x 240 = 36 px < 80 px: unchanged
    assert detector.search_scale(1080) == pytest.approx(80 / 162)
    assert FaceDetector(DetectorConfig(min_face_fraction=0.0)).search_scale(2160) == 1.0


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


@pytest.mark.parametrize("field, value", [("min_face_px", 10), ("min_score", 9.0), ("min_face_fraction", -0.1),
                                          ("min_face_fraction", 0.6)])
def test_bad_detector_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        DetectorConfig(**{field: value})


def test_frames_must_be_rgb_uint8(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((10, 10), np.uint8))
