"""Following every face: recall between detections, and ids kept when two real faces cross."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, crossing_photos, grace_hopper, moving_photo, render, similarity
from pipeline.faces.track import FaceTracker, TrackerConfig, track_video


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig())


def test_two_faces_crossing_keep_their_ids(detector: FaceDetector) -> None:
    photos = []
    for image in (astronaut(), grace_hopper()):
        face = detector.detect(image)[0]
        photos.append((image, tuple(face.landmarks.mean(axis=0)), face.box.w))
    frames, _ = crossing_photos(photos, n_frames=40)
    tracker = FaceTracker(TrackerConfig(), detector)
    per_frame = [tracker.update(frame) for frame in frames]
    first, last = per_frame[0], per_frame[-1]
    assert len(first) == 2 and len(last) == 2
    # the astronaut starts on the left and ends on the right, Grace Hopper the other way round
    left_id = min(first, key=lambda f: f.box.x).face_id
    right_id = max(first, key=lambda f: f.box.x).face_id
    assert max(last, key=lambda f: f.box.x).face_id == left_id
    assert min(last, key=lambda f: f.box.x).face_id == right_id
    assert {f.face_id for faces in per_frame for f in faces} == {left_id, right_id}   # no third id
    for faces in per_frame:   # the face in front (Grace Hopper) is never lost
        assert right_id in {f.face_id for f in faces}


def test_tracking_keeps_a_moving_face_between_detections(detector: FaceDetector) -> None:
    image = astronaut()
    face = detector.detect(image)[0]
    frames, _ = moving_photo(image, tuple(face.landmarks.mean(axis=0)), n_frames=30, zoom=(1.1, 1.4))
    per_frame = list(track_video(frames, TrackerConfig(detect_every=5)))
    assert all(len(faces) == 1 and faces[0].face_id == 0 for faces in per_frame)
    assert [faces[0].detected for faces in per_frame] == [i % 5 == 0 for i in range(30)]
    crops = np.stack([faces[0].crop for faces in per_frame])
    assert crops.shape == (30, 112, 112, 3) and crops.dtype == np.uint8


def test_default_settings_find_a_moving_face_in_every_frame_of_a_larger_video(detector: FaceDetector) -> None:
    # 800x640, a 120 px face turning by up to 30 degrees: searched downscaled, every 10th frame only
    image = astronaut()
    face = detector.detect(image)[0]
    zoom = 120.0 / face.box.w
    frames, _ = moving_photo(image, tuple(face.landmarks.mean(axis=0)), n_frames=30, size=(800, 640),
                             zoom=(zoom, 1.3 * zoom), max_shift=60.0)
    config = TrackerConfig()
    assert config.detect_every > 1 and FaceDetector(DetectorConfig()).search_scale(640) < 1.0
    per_frame = list(track_video(frames, config))
    assert all(len(faces) == 1 and faces[0].face_id == 0 for faces in per_frame)
    assert sum(faces[0].detected for faces in per_frame) == len(frames) // config.detect_every


def test_a_face_that_leaves_is_not_followed_onto_the_background(detector: FaceDetector) -> None:
    image = astronaut()
    tracker = FaceTracker(TrackerConfig(detect_every=10), detector)
    assert len(tracker.update(image)) == 1
    assert tracker.update(np.full_like(image, 90)) == []


@pytest.mark.parametrize("field, value", [("detect_every", 0), ("min_similarity", 1.0), ("min_iou", 0.0),
                                          ("max_distance", 0.0), ("forget_frames", -1),
                                          ("min_start_score", 9.0)])
def test_bad_tracker_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        TrackerConfig(**{field: value})


def test_a_face_lost_between_detections_is_searched_for_at_once(detector: FaceDetector) -> None:
    pieces = []
    for image in (grace_hopper(), astronaut()):
        face = detector.detect(image)[0]
        (cx, cy), half = np.rint(face.landmarks.mean(axis=0)).astype(int), int(0.9 * face.box.w)
        pieces.append((image[cy - half:cy + half, cx - half:cx + half], 100.0 / face.box.w, float(half)))

    def frame(astronaut_x: float) -> np.ndarray:
        return render([(piece, similarity(0.0, zoom, (half, half), (x, 120.0)))
                       for (piece, zoom, half), x in zip(pieces, (80.0, astronaut_x))], (480, 240))

    # a cut: the astronaut jumps across the frame between two detection frames, Grace Hopper stays
    tracker = FaceTracker(TrackerConfig(detect_every=10), detector)
    first = tracker.update(frame(230.0))
    hopper, astronaut_id = (f.face_id for f in sorted(first, key=lambda f: f.box.x))
    assert all(f.detected for f in first)
    after_cut = {f.face_id: f for f in tracker.update(frame(400.0))}
    # the astronaut is searched for and found again at once, keeping her id (by descriptor);
    # Grace Hopper is followed, not detected
    assert after_cut[astronaut_id].detected and after_cut[astronaut_id].box.x > 300
    assert not after_cut[hopper].detected
    assert {f.face_id: f.detected for f in tracker.update(frame(400.0))} == {hopper: False, astronaut_id: False}
