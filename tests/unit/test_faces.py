"""Face detection, tracking and box-based alignment on a real photograph (skimage's astronaut)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data

from pipeline.predict.align import Box, crop_face, square_crop_box
from pipeline.predict.faces import DetectorConfig, FaceDetector, FaceTracker, track_faces
from pipeline.predict.photo_video import panned_frames, write_photo_video

# The astronaut's face in skimage.data.astronaut() (512x512): forehead to chin, ear to ear.
FACE = Box(x=170.0, y=60.0, w=110.0, h=115.0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig())


def _on_face(box: Box, face: Box) -> bool:
    cx, cy = box.centre
    inside = face.x <= cx <= face.x + face.w and face.y <= cy <= face.y + face.h
    return inside and 0.3 < box.iou(face) <= 1.0


def test_detector_finds_the_face_in_a_real_photograph(astronaut, detector):
    boxes = detector.detect(astronaut)
    assert boxes, "no face found in the astronaut photograph"
    largest = max(boxes, key=lambda b: b.area)
    assert _on_face(largest, FACE), largest


def test_local_search_finds_the_face_near_its_last_box_only(astronaut, detector):
    near = detector.detect(astronaut, around=Box(FACE.x + 10, FACE.y + 10, 100, 100))
    assert len(near) == 1 and _on_face(near[0], FACE), near
    assert detector.detect(astronaut, around=Box(20, 300, 60, 60)) == []   # far from the face


def test_detector_finds_nothing_in_a_blank_frame(detector):
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_detector_rejects_non_rgb_input(detector):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_tracker_follows_the_face_through_a_video_of_the_photograph(tmp_path: Path, astronaut):
    path = write_photo_video(tmp_path / "astronaut.mp4", astronaut, n_frames=20, shift=2, audio_hz=None)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 20
    boxes = track_faces(frames, DetectorConfig())
    assert all(box is not None for box in boxes)
    for i, box in enumerate(boxes):
        shifted = Box(FACE.x + 2 * i, FACE.y + 2 * i, FACE.w, FACE.h)
        assert _on_face(box, shifted), (i, box)
    # The track moves with the face: +2 px per frame over 19 frames, smoothed (so lagging a little).
    drift = np.subtract(boxes[-1].centre, boxes[0].centre)
    assert np.all((drift > 20) & (drift < 50)), drift


def test_tracker_holds_the_box_then_drops_it():
    tracker = FaceTracker(DetectorConfig(hold_frames=2), detector=None)
    face = Box(10, 10, 50, 50)
    assert tracker.update_with([face]) == face
    assert tracker.update_with([]) == face
    assert tracker.update_with([]) == face
    assert tracker.update_with([]) is None
    assert tracker.update_with([]) is None


def test_tracker_prefers_the_continuing_face_and_smooths():
    tracker = FaceTracker(DetectorConfig(smoothing=0.5))
    tracker.update_with([Box(100, 100, 50, 50)])
    # A slightly larger box far away loses to the one continuing the track.
    box = tracker.update_with([Box(300, 300, 55, 55), Box(110, 100, 50, 50)])
    assert box == Box(105, 100, 50, 50)
    # A much larger face elsewhere wins and starts a new track, unblended.
    assert tracker.update_with([Box(300, 300, 200, 200), Box(110, 100, 50, 50)]) == Box(300, 300, 200, 200)


def test_tracker_picks_the_largest_face_without_history():
    tracker = FaceTracker(DetectorConfig())
    assert tracker.update_with([Box(0, 0, 20, 20), Box(50, 50, 40, 40)]) == Box(50, 50, 40, 40)


@pytest.mark.parametrize("field, value", [("smoothing", 0.0), ("scale_factor", 1.0), ("hold_frames", -1)])
def test_detector_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        DetectorConfig(**{field: value})


def test_crop_is_square_112_rgb_and_centred_on_the_box(astronaut):
    crop = crop_face(astronaut, FACE, margin=0.1)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    left, top, right, bottom = square_crop_box(FACE, margin=0.1)
    assert right - left == bottom - top == round(115 * 1.2)
    assert abs((left + right) / 2 - FACE.centre[0]) <= 1 and abs((top + bottom) / 2 - FACE.centre[1]) <= 1


def test_crop_outside_the_frame_is_black():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(frame, Box(-50, -50, 60, 60), margin=0.0)
    assert crop[:50, :50].max() == 0       # the part left of and above the frame
    assert crop[-15:, -15:].min() == 200   # the part inside the frame


def test_panned_frames_shift_the_photograph(astronaut):
    frames = panned_frames(astronaut, 3, shift=4)
    assert frames.shape == (3, 512, 512, 3)
    np.testing.assert_array_equal(frames[2, 8:, 8:], astronaut[:-8, :-8])
    assert frames[2, :8].max() == 0
