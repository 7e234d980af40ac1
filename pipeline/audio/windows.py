"""Per-video-frame log-mel windows of a video's soundtrack.

The whole track is decoded and turned into one log-mel (n_mels, T) once; each video frame's
window is then an index range into it (:mod:`pipeline.audio.align`). :class:`VideoAudio` keeps the
track's mel and the window starts, so callers can cut windows for any subset of frames without
holding all (N, n_mels, C) windows at once; :func:`video_audio_windows` returns them all.

Example (a one-second 25 fps video with a tone track; 0.5 s windows of 101 mel frames):
    >>> import tempfile, skimage.data
    >>> from pipeline.data.synth.photo_video import write_photo_video
    >>> tmp = tempfile.TemporaryDirectory()
    >>> video = write_photo_video(f"{tmp.name}/clip.mp4", skimage.data.astronaut(), n_frames=25, fps=25)
    >>> audio = video_audio(video, n_frames=25, fps=25.0, cfg=AudioConfig())
    >>> audio.mel.shape[0], audio.starts.shape, bool(audio.present.all())
    (64, (25,), True)
    >>> audio.windows([0, 1]).mel.shape
    (2, 64, 101)
    >>> tmp.cleanup()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.audio.align import frame_times, gather_windows, window_present, window_starts
from pipeline.audio.decode import AudioTrack, decode_audio
from pipeline.data.media_open import MediaLimits
from pipeline.audio.features import AudioConfig, LogMel


@dataclass(frozen=True)
class AudioWindows:
    """The mel windows of some video frames and whether audio covers each frame."""

    mel: np.ndarray       # (N, n_mels, C) float32, zeros where there is no audio
    present: np.ndarray   # (N,) bool


@dataclass(frozen=True)
class VideoAudio:
    """One video's track log-mel and each frame's window into it."""

    mel: np.ndarray       # (n_mels, T) float32; T = 0 without audio
    starts: np.ndarray    # (N,) int64 first mel frame of each video frame's window
    present: np.ndarray   # (N,) bool
    context: int          # mel frames per window (odd)

    @property
    def n_frames(self) -> int:
        """Number of video frames."""
        return len(self.starts)

    def windows(self, frames: Sequence[int] | np.ndarray | None = None) -> AudioWindows:
        """The windows of ``frames`` (all frames when ``None``)."""
        index = np.arange(self.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.n_frames):
            raise IndexError(f"frame indices must lie in [0, {self.n_frames}), got {index.min()}..{index.max()}")
        return AudioWindows(
            mel=gather_windows(self.mel, self.starts[index], self.context),
            present=self.present[index].copy(),
        )


def track_audio(
    track: AudioTrack | None, n_frames: int, fps: float, cfg: AudioConfig, logmel: LogMel | None = None
) -> VideoAudio:
    """Mel and window starts for a decoded ``track`` (``None``: no audio) of a video of ``n_frames`` frames."""
    logmel = LogMel(cfg) if logmel is None else logmel
    context = cfg.context_frames
    if track is None or len(track.samples) == 0:
        times = frame_times(n_frames, fps)
        return VideoAudio(
            mel=np.zeros((cfg.n_mels, 0), np.float32),
            starts=window_starts(times, 0.0, cfg.hop_s, context),
            present=np.zeros(n_frames, dtype=bool),
            context=context,
        )
    if track.sample_rate != cfg.sample_rate:
        raise ValueError(f"track sample rate {track.sample_rate} Hz != audio config {cfg.sample_rate} Hz")
    with torch.no_grad():
        mel = logmel(torch.from_numpy(track.samples)).numpy().astype(np.float32, copy=False)
    times = frame_times(n_frames, fps, track.video_pts_s)
    return VideoAudio(
        mel=mel,
        starts=window_starts(times, track.start_s, cfg.hop_s, context),
        present=window_present(times, track.start_s, cfg.hop_s, mel.shape[1]),
        context=context,
    )


def video_audio(
    video_path: str | Path, n_frames: int, fps: float, cfg: AudioConfig, logmel: LogMel | None = None,
    limits: MediaLimits = MediaLimits(),
) -> VideoAudio:
    """Decode ``video_path``'s audio (within ``limits``) and return its :class:`VideoAudio` (no audio stream:
    zeros, absent)."""
    track = decode_audio(video_path, cfg.sample_rate, limits)
    return track_audio(track, n_frames, fps, cfg, logmel)


def video_audio_windows(video_path: str | Path, n_frames: int, fps: float, cfg: AudioConfig) -> AudioWindows:
    """The (N, n_mels, C) log-mel windows of every frame of ``video_path`` and their presence mask."""
    return video_audio(video_path, n_frames, fps, cfg).windows()


def audio_lookahead_s(cfg: AudioConfig) -> float:
    """Seconds of audio after a frame's presentation time that its window reads, at most.

    The window's last mel frame lies ``context_frames // 2`` hops after its centre, which is within
    half a hop of the frame's time, and that mel frame's STFT reads ``win_length / 2`` samples past
    its own centre.
    """
    return (cfg.context_frames // 2 + 0.5) * cfg.hop_s + cfg.win_length / (2 * cfg.sample_rate)


def causal_audio_delay(cfg: AudioConfig, fps: float) -> int:
    """Video frames by which to delay the audio embeddings so that none reads audio after its frame's time."""
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    # a hair below the ceiling absorbs float error when the look-ahead is a whole number of frames
    return int(np.ceil(audio_lookahead_s(cfg) * fps - 1e-9))
