"""Audio decoding with PyAV: mono 16 kHz float32 on the video clock; no audio -> None; bad files name themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _audio_media import write_av

from pipeline.audio.decode import AudioDecodeError, decode_audio


def _burst(sample_rate: int, seconds: float, onset_s: float, hz: float = 1000.0) -> np.ndarray:
    """Silence, then a tone from ``onset_s`` (seconds into the track) to the end."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    return np.where(t >= onset_s, 0.3 * np.sin(2 * np.pi * hz * t), 0.0).astype(np.float32)


def _onset_s(track) -> float:
    """Time on the video clock of the first clearly audible sample."""
    return track.start_s + int(np.argmax(np.abs(track.samples) > 0.05)) / track.sample_rate


@pytest.mark.parametrize("sample_rate", [16000, 22050, 44100])
def test_resampled_to_mono_16k_float32(tmp_path: Path, sample_rate: int) -> None:
    path = write_av(tmp_path / "a.mp4", 25, 25.0, _burst(sample_rate, 1.0, 0.5), sample_rate)
    track = decode_audio(path)
    assert track is not None
    assert track.sample_rate == 16000
    assert track.samples.dtype == np.float32 and track.samples.ndim == 1
    assert track.duration_s == pytest.approx(1.0, abs=0.1)   # AAC pads up to a whole frame
    assert track.start_s == pytest.approx(0.0, abs=1e-3)
    assert _onset_s(track) == pytest.approx(0.5, abs=0.003)
    assert np.abs(track.samples).max() <= 1.0


def test_other_sample_rate_on_request(tmp_path: Path) -> None:
    path = write_av(tmp_path / "a.mp4", 10, 25.0, _burst(16000, 0.4, 0.1), 16000)
    track = decode_audio(path, sample_rate=8000)
    assert track.sample_rate == 8000
    assert track.duration_s == pytest.approx(0.4, abs=0.1)


@pytest.mark.parametrize("late_s", [0.25, 1.0])
def test_late_audio_start_is_on_the_video_clock(tmp_path: Path, late_s: float) -> None:
    # The tone starts 0.2 s into the track, which itself starts late_s after the first video frame.
    path = write_av(tmp_path / "late.mp4", 50, 25.0, _burst(22050, 1.0, 0.2), 22050, audio_start_s=late_s)
    track = decode_audio(path)
    assert track.start_s > late_s - 0.1   # the encoder's priming samples may precede the start a little
    assert _onset_s(track) == pytest.approx(late_s + 0.2, abs=0.003)


def test_video_timestamps_collected(tmp_path: Path) -> None:
    path = write_av(tmp_path / "ntsc.mp4", 12, 30000 / 1001, _burst(16000, 0.4, 0.0), 16000)
    track = decode_audio(path)
    assert track.video_pts_s == pytest.approx(np.arange(12) * 1001 / 30000, abs=1e-4)


def test_avi_container(tmp_path: Path) -> None:
    path = write_av(tmp_path / "a.avi", 15, 30.0, _burst(16000, 0.5, 0.25), 16000)
    track = decode_audio(path)
    assert _onset_s(track) == pytest.approx(0.25, abs=0.01)
    assert len(track.video_pts_s) == 15


def test_no_audio_stream_gives_none(tmp_path: Path) -> None:
    assert decode_audio(write_av(tmp_path / "silent.mp4", 5, 25.0, None)) is None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        decode_audio(tmp_path / "nope.mp4")


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    good = write_av(tmp_path / "good.mp4", 25, 25.0, _burst(16000, 1.0, 0.0), 16000)
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match="truncated.mp4"):
        decode_audio(bad)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError, match="garbage.mp4"):
        decode_audio(bad)


def test_invalid_sample_rate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        decode_audio(tmp_path / "x.mp4", sample_rate=0)
