"""Timestamp alignment: each frame's window is centred within half a hop of its presentation time,
zero-padded past the ends of the audio, with presence marked; for any fps, duration and start offset."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audio.align import (
    centre_indices, frame_times, gather_windows, window_present, window_starts,
)

HOP_S = 0.005
FPS = st.one_of(st.sampled_from([25.0, 30000 / 1001, 29.97, 30.0, 24.0, 50.0, 60.0, 12.5]),
                st.floats(min_value=5.0, max_value=120.0))
CONTEXT = st.integers(min_value=0, max_value=60).map(lambda k: 2 * k + 1)


@settings(max_examples=200, deadline=None)
@given(fps=FPS, n_frames=st.integers(1, 3000), start_s=st.floats(-3.0, 10.0), context=CONTEXT)
def test_window_centre_within_half_a_hop_of_frame_time(fps: float, n_frames: int, start_s: float, context: int) -> None:
    times = frame_times(n_frames, fps)
    starts = window_starts(times, start_s, HOP_S, context)
    centre_time = start_s + (starts + context // 2) * HOP_S
    assert np.all(np.abs(centre_time - times) <= HOP_S / 2 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(fps=FPS, duration_s=st.floats(0.1, 20.0), audio_s=st.floats(0.0, 25.0), start_s=st.floats(-2.0, 8.0))
def test_presence_marks_frames_the_audio_covers(fps: float, duration_s: float, audio_s: float, start_s: float) -> None:
    n_frames = max(1, int(duration_s * fps))
    n_mel = int(audio_s / HOP_S) + 1 if audio_s > 0 else 0
    times = frame_times(n_frames, fps)
    present = window_present(times, start_s, HOP_S, n_mel)
    first, last = start_s - HOP_S / 2, start_s + (n_mel - 0.5) * HOP_S
    inside = (times >= first + 1e-9) & (times < last - 1e-9)
    outside = (times < first - 1e-9) | (times >= last + 1e-9)
    assert present[inside].all()
    assert not present[outside].any()
    if start_s > 0:   # a late audio start: every frame shown before it has no audio
        assert not present[times < start_s - HOP_S].any()


@settings(max_examples=150, deadline=None)
@given(n_time=st.integers(0, 80), starts=st.lists(st.integers(-100, 120), min_size=1, max_size=20),
       length=st.integers(1, 40))
def test_gather_windows_matches_a_zero_padded_slice(n_time: int, starts: list[int], length: int) -> None:
    mel = np.arange(3 * n_time, dtype=np.float32).reshape(3, n_time) + 1   # no zeros inside the track
    out = gather_windows(mel, np.array(starts), length)
    assert out.shape == (len(starts), 3, length) and out.dtype == np.float32
    for row, s in zip(out, starts):
        expected = np.zeros((3, length), np.float32)
        for k in range(length):
            if 0 <= s + k < n_time:
                expected[:, k] = mel[:, s + k]
        np.testing.assert_array_equal(row, expected)


@settings(max_examples=100, deadline=None)
@given(fps=FPS, n_frames=st.integers(1, 400), late_s=st.floats(0.05, 5.0), context=CONTEXT)
def test_frames_before_a_late_start_get_zeros(fps: float, n_frames: int, late_s: float, context: int) -> None:
    times = frame_times(n_frames, fps)
    n_mel = 400
    mel = np.ones((4, n_mel), np.float32)
    starts = window_starts(times, late_s, HOP_S, context)
    windows = gather_windows(mel, starts, context)
    present = window_present(times, late_s, HOP_S, n_mel)
    # A window holds audio exactly over the mel frames that exist: zeros before the start.
    before = times + (context // 2 + 0.5) * HOP_S < late_s - 1e-9
    assert not windows[before].any()
    assert not present[times < late_s - HOP_S].any()
    # Present frames have their centre column filled.
    assert (windows[present][:, :, context // 2] == 1).all()


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0])
def test_ten_minutes_do_not_drift(fps: float) -> None:
    # Integer frame ratios would drift at 29.97 fps; timestamps do not.
    n = int(600 * fps)
    times = frame_times(n, fps)
    centre = centre_indices(times, 0.0, HOP_S)
    assert abs(centre[-1] * HOP_S - (n - 1) / fps) <= HOP_S / 2


def test_frame_times_prefer_container_timestamps() -> None:
    pts = np.array([0.0, 0.04, 0.1, 0.12])   # irregular (variable frame rate)
    times = frame_times(6, 25.0, pts)
    np.testing.assert_allclose(times, [0.0, 0.04, 0.1, 0.12, 0.16, 0.2])
    np.testing.assert_allclose(frame_times(3, 25.0, pts), [0.0, 0.04, 0.1])


def test_frame_times_fall_back_to_fps_on_bad_timestamps() -> None:
    np.testing.assert_allclose(frame_times(3, 25.0, np.array([0.0, 0.0, 0.04])), [0.0, 0.04, 0.08])
    np.testing.assert_allclose(frame_times(3, 25.0, np.array([])), [0.0, 0.04, 0.08])
    np.testing.assert_allclose(frame_times(3, 25.0, None), [0.0, 0.04, 0.08])


@pytest.mark.parametrize("call,match", [
    (lambda: frame_times(-1, 25.0), "n_frames"),
    (lambda: frame_times(3, 0.0), "fps"),
    (lambda: window_starts(np.zeros(2), 0.0, HOP_S, 4), "odd"),
    (lambda: centre_indices(np.zeros(2), 0.0, 0.0), "hop_s"),
    (lambda: gather_windows(np.zeros(5), np.zeros(1, int), 3), "mel"),
])
def test_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
