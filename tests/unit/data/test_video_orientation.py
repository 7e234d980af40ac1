"""Frames as a viewer sees them: contiguous whatever FFmpeg's row padding, turned by the display matrix.

Real-photograph videos at common sizes, stored upright or sideways with a display matrix as phones
store them, must give the same faces, in display orientation, every time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from _predict_models import PredictModelPaths, build_predict_models
from pipeline.data.video import decode_frames
from pipeline.faces.crop import crop_video
from pipeline.faces.detect import check_frame
from pipeline.faces.moving_photos import astronaut, grace_hopper, located_faces, write_moving_photo_video
from pipeline.predict.overlay import write_overlay
from pipeline.data.synth.photo_video import write_frames_video
from pipeline.predict.video import predict_video

ROTATIONS = (0, -90, 90, 180)
# (width, height) as a viewer sees them: 480p, 360p, and a portrait phone clip
SIZES = ((854, 480), (640, 360), (480, 854))
N_FRAMES = 12


@pytest.fixture(scope="module")
def located() -> list[tuple[np.ndarray, tuple[float, float], float]]:
    return located_faces([astronaut(), grace_hopper()])


def _marked(width: int, height: int) -> np.ndarray:
    """A grey frame with a white block in its top-left corner: which way it is turned shows."""
    frame = np.full((height, width, 3), 60, np.uint8)
    frame[: height // 4, : width // 4] = 255
    return frame


def test_frames_of_a_padded_width_are_contiguous(tmp_path: Path) -> None:
    # 854 RGB pixels are 2,562 bytes; FFmpeg pads each row to 2,592
    video = write_frames_video(tmp_path / "wide.mp4", [_marked(854, 480)] * 3, audio_hz=None)
    with av.open(str(video)) as container:
        raw = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert not raw.flags.c_contiguous   # the condition this guards against is still FFmpeg's
    images = [image for _, _, image in decode_frames(video)]
    assert all(image.flags.c_contiguous and image.shape == (480, 854, 3) for image in images)


def test_the_detector_is_handed_packed_rows(tmp_path: Path) -> None:
    # dlib's search of PyAV's own padded array depends on what it ran before (a frame found or missed by
    # chance); whoever calls the detector with such an array, it searches a packed copy
    video = write_frames_video(tmp_path / "wide.mp4", [_marked(854, 480)] * 2, audio_hz=None)
    with av.open(str(video)) as container:
        raw = next(container.decode(video=0)).to_ndarray(format="rgb24")
    checked = check_frame(raw)
    assert checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, raw)


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_the_display_matrix_turns_frames_upright(tmp_path: Path, rotation: int) -> None:
    viewed = _marked(64, 48)
    stored = np.rot90(viewed, -rotation // 90)
    video = write_frames_video(tmp_path / "turned.mp4", [stored] * 3, audio_hz=None, display_rotation=rotation)
    images = [image for _, _, image in decode_frames(video)]
    assert all(image.shape == viewed.shape for image in images)
    assert np.abs(images[0].astype(int) - viewed).mean() < 3


@pytest.mark.parametrize("rotation", (-90, 180))
def test_the_overlay_is_written_upright(tmp_path: Path, rotation: int) -> None:
    viewed = _marked(64, 48)
    video = write_frames_video(tmp_path / "turned.mp4", [np.rot90(viewed, -rotation // 90)] * 3, audio_hz=None,
                               display_rotation=rotation)
    out = write_overlay(video, tmp_path / "overlay.mp4", [])
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0
        image = frame.to_ndarray(format="rgb24")
    assert image.shape == viewed.shape and np.abs(image.astype(int) - viewed).mean() < 3


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_crop_finds_the_face_in_every_size_and_orientation(located, tmp_path: Path, size: tuple[int, int],
                                                           rotation: int) -> None:
    video, _ = write_moving_photo_video(tmp_path / "clip.mp4", located[0], size, N_FRAMES,
                                        display_rotation=rotation)
    summary = crop_video(video, tmp_path / "crops", min_frames=1)
    assert summary.frames == N_FRAMES
    assert sum(summary.folders.values()) >= 0.95 * N_FRAMES, summary


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> PredictModelPaths:
    return build_predict_models(tmp_path_factory.mktemp("predict-models"))


def test_predict_gives_the_same_csv_whatever_ran_before(onnx_models, located, tmp_path: Path) -> None:
    video, matrices = write_moving_photo_video(tmp_path / "wide.mp4", located[1], (854, 480), N_FRAMES)
    other, _ = write_moving_photo_video(tmp_path / "other.mp4", located[0], (640, 360), N_FRAMES,
                                        display_rotation=-90)
    models = (onnx_models.visual, onnx_models.audio, onnx_models.sequence)
    first = predict_video(video, tmp_path / "a" / "wide.csv", *models, device="cpu")
    predict_video(other, tmp_path / "b" / "other.csv", *models, device="cpu")
    predict_video(video, tmp_path / "c" / "wide.csv", *models, device="cpu")
    digests = {hashlib.md5((tmp_path / d / "wide.csv").read_bytes()).hexdigest() for d in ("a", "c")}
    assert len(digests) == 1
    assert first.faces >= 0.95 * N_FRAMES


def test_predict_boxes_are_in_display_orientation(onnx_models, located, tmp_path: Path) -> None:
    import csv

    video, matrices = write_moving_photo_video(tmp_path / "phone.mp4", located[0], (480, 854), N_FRAMES,
                                               display_rotation=-90)
    out = tmp_path / "phone.csv"
    summary = predict_video(video, out, onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    assert summary.faces >= 0.95 * N_FRAMES
    _, centre, _ = located[0]
    with out.open() as fh:
        rows = [row for row in csv.DictReader(fh) if row["face_present"] == "1"]
    for row in rows:
        known = matrices[int(row["frame"])] @ np.array([*centre, 1.0])   # the face centre as a viewer sees it
        x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
        assert x <= known[0] <= x + w and y <= known[1] <= y + h, (row["frame"], known, (x, y, w, h))


def test_crop_writes_the_same_bytes_whatever_ran_before(located, tmp_path: Path) -> None:
    video, _ = write_moving_photo_video(tmp_path / "wide.mp4", located[1], (854, 480), N_FRAMES)
    other, _ = write_moving_photo_video(tmp_path / "other.mp4", located[0], (640, 360), N_FRAMES,
                                        display_rotation=90)
    crop_video(video, tmp_path / "a", min_frames=1)
    crop_video(other, tmp_path / "b", min_frames=1)
    crop_video(video, tmp_path / "c", min_frames=1)
    first, again = ({p.relative_to(tmp_path / d): p.read_bytes() for p in (tmp_path / d / "wide").iterdir()}
                    for d in ("a", "c"))
    assert len(first) >= 0.95 * N_FRAMES and first == again
