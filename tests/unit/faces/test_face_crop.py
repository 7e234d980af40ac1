"""`crop`'s writer: Aff-Wild2 cropped_aligned folders from real-face videos, resumable, one bad video reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.affwild2 import crop_name
from pipeline.faces.align import ARCFACE_TEMPLATE, similarity_transform, transform_points
from pipeline.faces.crop import DONE_DIR, crop_video, crop_videos, videos_in
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, grace_hopper, moving_photo, side_by_side_photos
from pipeline.data.synth.photo_video import write_frames_video

N = 12


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig())


@pytest.fixture(scope="module")
def one_face(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Path:
    image = astronaut()
    face = detector.detect(image)[0]
    frames, _ = moving_photo(image, tuple(face.landmarks.mean(axis=0)), n_frames=N, zoom=(1.1, 1.3))
    frames[5] = 0   # a frame without a face
    return write_frames_video(tmp_path_factory.mktemp("crop") / "solo.mp4", frames, audio_hz=None)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Path:
    """The astronaut on the left, Grace Hopper on the right, both drifting right."""
    photos = []
    for image in (astronaut(), grace_hopper()):
        face = detector.detect(image)[0]
        photos.append((image, tuple(face.landmarks.mean(axis=0)), face.box.w))
    frames = side_by_side_photos(photos, n_frames=N)
    return write_frames_video(tmp_path_factory.mktemp("crop") / "duo.mp4", frames, audio_hz=None)


def test_one_face_gives_one_folder_of_aligned_crops(one_face: Path, detector: FaceDetector, tmp_path: Path) -> None:
    summary = crop_video(one_face, tmp_path, min_frames=3)
    names = sorted(p.name for p in (tmp_path / "solo").iterdir())
    assert summary.folders == {"solo": N - 1} and not summary.skipped
    assert names == [crop_name(i) for i in range(N) if i != 5]   # 1-based, frame 6 has no face
    assert sorted(p.name for p in tmp_path.iterdir()) == [DONE_DIR, "solo"]
    record = json.loads((tmp_path / DONE_DIR / "solo.json").read_text())
    assert record["frames"] == N and record["folders"] == {"solo": N - 1}
    with Image.open(tmp_path / "solo" / "00001.jpg") as image:
        crop = np.asarray(image.convert("RGB"))
    assert crop.shape == (112, 112, 3)
    # the crop is aligned: its own landmarks lie near the template (the face's shape vs the template's)
    found = detector.detect(np.pad(crop, ((60, 60), (60, 60), (0, 0))))
    landmarks = found[0].landmarks - 60
    assert np.abs(transform_points(similarity_transform(landmarks), landmarks) - landmarks).max() < 4.0
    assert np.linalg.norm(landmarks - ARCFACE_TEMPLATE, axis=1).max() < 10.0


def test_two_faces_are_named_left_and_right(two_faces: Path, tmp_path: Path) -> None:
    summary = crop_video(two_faces, tmp_path, min_frames=3)
    assert summary.folders == {"duo_left": N, "duo_right": N}
    left = np.asarray(Image.open(tmp_path / "duo_left" / "00001.jpg").convert("RGB"), np.float32)
    right = np.asarray(Image.open(tmp_path / "duo_right" / "00001.jpg").convert("RGB"), np.float32)
    # Grace Hopper (right) wears a dark uniform cap and stands before a blue flag; the left crop is the astronaut
    assert left[:20].mean() > right[:20].mean()


def test_a_complete_video_is_skipped_and_an_interrupted_one_redone(one_face: Path, tmp_path: Path) -> None:
    crop_video(one_face, tmp_path, min_frames=3)
    assert crop_video(one_face, tmp_path, min_frames=3).skipped
    # a run killed while moving folders into place: the pending list is there, the done record is not
    (tmp_path / DONE_DIR / "solo.json").unlink()
    (tmp_path / DONE_DIR / "solo.pending").write_text(json.dumps(["solo"]))
    (tmp_path / "solo" / "00001.jpg").unlink()
    summary = crop_video(one_face, tmp_path, min_frames=3)
    assert not summary.skipped and (tmp_path / "solo" / "00001.jpg").is_file()
    assert not (tmp_path / DONE_DIR / "solo.pending").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("names", [["../victim"], ["solo/../../victim"], ["/abs"], ["other_video"], "solo", [1]])
def test_a_pending_list_naming_other_folders_removes_nothing(one_face: Path, tmp_path: Path, names: object) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (out / "other_video").mkdir(parents=True)
    (out / DONE_DIR).mkdir()
    pending = out / DONE_DIR / "solo.pending"
    pending.write_text(json.dumps(names))
    with pytest.raises(ValueError, match=rf"^{pending}: "):
        crop_video(one_face, out, min_frames=3)
    assert (victim / "keep.txt").read_text() == "keep" and (out / "other_video").is_dir()
    assert pending.is_file()


def test_a_pending_folder_that_is_a_link_loses_the_link_not_its_target(one_face: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    (out / DONE_DIR).mkdir(parents=True)
    (out / "solo").symlink_to(victim)
    (out / DONE_DIR / "solo.pending").write_text(json.dumps(["solo"]))
    crop_video(one_face, out, min_frames=3)
    assert (victim / "keep.txt").read_text() == "keep"
    assert not (out / "solo").is_symlink() and (out / "solo" / "00001.jpg").is_file()


def test_a_bad_video_is_reported_while_the_others_complete(one_face: Path, tmp_path: Path) -> None:
    broken = tmp_path / "in" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(b"not a video" * 50)
    foreign = tmp_path / "out" / "solo"   # a folder crop did not write is never overwritten
    foreign.mkdir(parents=True)
    done, failed = crop_videos([broken, one_face], tmp_path / "out", min_frames=3)
    assert done == [] and sorted(failed) == sorted([str(broken), str(one_face)])
    assert str(broken) in failed[str(broken)] and str(foreign) in failed[str(one_face)]
    assert list(foreign.iterdir()) == [] and not (tmp_path / "out" / DONE_DIR / "solo.json").exists()
    foreign.rmdir()
    done, failed = crop_videos([broken, one_face], tmp_path / "out", min_frames=3)
    assert [s.folders for s in done] == [{"solo": N - 1}] and list(failed) == [str(broken)]


def test_faces_seen_in_too_few_frames_are_left_out(one_face: Path, tmp_path: Path) -> None:
    summary = crop_video(one_face, tmp_path, min_frames=N + 1)
    assert summary.folders == {} and summary.dropped == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [DONE_DIR]


def test_videos_in_a_folder(tmp_path: Path) -> None:
    for name in ("b/two.avi", "a/one.mp4", "notes.txt", "cropped_aligned/x.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in videos_in(tmp_path)] == ["one.mp4", "two.avi"]
    assert videos_in(tmp_path / "a" / "one.mp4") == [tmp_path / "a" / "one.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .mp4/.avi videos"):
        videos_in(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no video or folder"):
        videos_in(tmp_path / "missing.mp4")
