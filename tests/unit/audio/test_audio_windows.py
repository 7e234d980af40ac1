"""Per-frame mel windows of real (tiny) videos: sound lands on the frames shown at its time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _audio_media import write_av

from pipeline.audio.decode import AudioDecodeError, AudioTrack
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import track_audio, video_audio, video_audio_windows

CFG = AudioConfig(context_s=0.1)   # 21 mel frames per window


def _tone_after(onset_s: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.where(t >= onset_s, 0.3 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0])
@pytest.mark.parametrize("late_s", [0.0, 0.6])
def test_sound_lands_on_the_frames_shown_at_its_time(tmp_path: Path, fps: float, late_s: float) -> None:
    n_frames = int(2.0 * fps)
    onset_video_s = late_s + 0.5             # the tone starts 0.5 s into a track starting late_s
    path = write_av(tmp_path / "v.mp4", n_frames, fps, _tone_after(0.5, 2.0 - late_s, 22050), 22050, late_s)
    windows = video_audio_windows(path, n_frames, fps, CFG)
    assert windows.mel.shape == (n_frames, 64, CFG.context_frames)
    assert windows.mel.dtype == np.float32
    times = np.arange(n_frames) / fps
    loud = windows.mel[:, :, CFG.context_frames // 2].max(axis=1) > 10.0   # the tone's band, at the centre
    # Frames clearly after the onset hear the tone; frames clearly before it do not.
    assert loud[times > onset_video_s + 0.02].all()
    assert not loud[times < onset_video_s - 0.02].any()
    # Before a late start there is no audio at all.
    assert not windows.present[times < late_s - 0.06].any()
    assert windows.present[(times > late_s + 0.01) & (times < 1.9)].all()
    assert not windows.mel[times + 0.06 < late_s - 0.06].any()


def test_video_without_audio_gives_zeros_and_absent(tmp_path: Path) -> None:
    path = write_av(tmp_path / "mute.mp4", 20, 25.0, None)
    windows = video_audio_windows(path, 20, 25.0, CFG)
    assert windows.mel.shape == (20, 64, 21)
    assert not windows.mel.any()
    assert not windows.present.any()


def test_frame_subsets_match_the_full_set(tmp_path: Path) -> None:
    path = write_av(tmp_path / "v.mp4", 30, 30.0, _tone_after(0.2, 1.0, 16000), 16000)
    audio = video_audio(path, 30, 30.0, CFG)
    every = audio.windows()
    part = audio.windows([3, 29, 0])
    np.testing.assert_array_equal(part.mel, every.mel[[3, 29, 0]])
    np.testing.assert_array_equal(part.present, every.present[[3, 29, 0]])
    with pytest.raises(IndexError):
        audio.windows([30])


def test_audio_shorter_than_the_video(tmp_path: Path) -> None:
    # 1 s of audio under 2 s of video: the second half has no audio.
    path = write_av(tmp_path / "short.mp4", 50, 25.0, _tone_after(0.0, 1.0, 16000), 16000)
    windows = video_audio_windows(path, 50, 25.0, CFG)
    times = np.arange(50) / 25.0
    assert windows.present[times < 0.95].all()
    assert not windows.present[times > 1.1].any()


def test_wrong_sample_rate_track_is_refused() -> None:
    track = AudioTrack(np.zeros(8000, np.float32), 8000, 0.0)
    with pytest.raises(ValueError, match="8000"):
        track_audio(track, 10, 25.0, CFG)


def test_corrupt_audio_names_the_file(tmp_path: Path) -> None:
    good = write_av(tmp_path / "good.mp4", 25, 25.0, _tone_after(0.0, 1.0, 16000), 16000)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(AudioDecodeError, match="broken.mp4"):
        video_audio_windows(bad, 25, 25.0, CFG)
