"""Videos written from frames: an array, or frames made one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.video import decode_frames
from pipeline.data.synth.photo_video import panned_frames, write_frames_video


def test_frames_can_be_written_one_at_a_time(tmp_path) -> None:
    frames = panned_frames(np.full((48, 64, 3), 200, np.uint8), n_frames=6)
    video = write_frames_video(tmp_path / "gen.mp4", (frame for frame in frames), fps=25)
    decoded = [image for _, _, image in decode_frames(video)]
    assert len(decoded) == 6 and decoded[0].shape == (48, 64, 3)


def test_frames_of_another_size_are_refused_by_index(tmp_path) -> None:
    frames = [np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 2"):
        write_frames_video(tmp_path / "bad.mp4", iter(frames), audio_hz=None)
    assert not (tmp_path / "bad.mp4").exists()


def test_no_frame_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no frame"):
        write_frames_video(tmp_path / "empty.mp4", iter([]), audio_hz=None)
