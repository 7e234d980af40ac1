"""Decode a video's audio track with PyAV: mono float32 at a fixed sample rate, placed on the video clock.

The video clock starts (t = 0) at the presentation time of the video stream's first frame, so frame
``i`` of a constant-rate video sits at ``i / fps``. ``AudioTrack.start_s`` says where the first audio
sample lies on that clock: ``0.5`` for a soundtrack that starts half a second after the picture,
negative when the audio starts earlier. Samples are assumed contiguous from there on (what
``ffmpeg -i video.mp4 audio.wav`` assumes too). The same pass over the file collects the video
packets' presentation times (no video decoding), so frames can be placed by their real timestamps.

Example (a one-second 25 fps video with a tone track):
    >>> import tempfile, skimage.data
    >>> from pipeline.data.synth.photo_video import write_photo_video
    >>> tmp = tempfile.TemporaryDirectory()
    >>> video = write_photo_video(f"{tmp.name}/clip.mp4", skimage.data.astronaut(), n_frames=25, fps=25)
    >>> track = decode_audio(video)
    >>> track.samples.dtype, track.sample_rate, track.start_s, round(track.duration_s, 1)
    (dtype('float32'), 16000, 0.0, 1.0)
    >>> track.video_pts_s[:3].tolist()
    [0.0, 0.04, 0.08]
    >>> tmp.cleanup()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from pipeline.data.media_open import MediaLimits, check_elapsed, check_header, open_media
from pipeline.error_words import error_words


class AudioDecodeError(ValueError):
    """A file's audio stream cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class AudioTrack:
    """Mono samples of one file's first audio stream and where they start on the video clock."""

    samples: np.ndarray   # (S,) float32 in [-1, 1]
    sample_rate: int
    start_s: float        # time of samples[0] relative to the first video frame
    # sorted presentation times (s, video clock) of the video packets; empty when unknown
    video_pts_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def duration_s(self) -> float:
        """Length of the track in seconds."""
        return len(self.samples) / self.sample_rate


def decode_audio(path: str | Path, sample_rate: int = 16000,
                 limits: MediaLimits = MediaLimits()) -> AudioTrack | None:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``; ``None`` if there is none.

    A file whose header, or whose decoded sound, runs past ``limits.max_duration_s`` is refused (the
    samples are held in memory: 64 KB per second at 16 kHz)."""
    path = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not path.is_file():
        raise FileNotFoundError(f"media file not found: {path}")
    try:
        with open_media(path, limits) as container:
            check_header(path, container, limits)
            if not container.streams.audio:
                return None
            return _decode(path, container, sample_rate, limits)
    except (av.FFmpegError, OSError) as exc:
        raise AudioDecodeError(
            f"{path}: cannot decode the audio stream ({error_words(exc, path)}); the file is corrupt or truncated"
        ) from exc


def _stream_start(stream: av.stream.Stream) -> float | None:
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


def _decode(path: Path, container: av.container.InputContainer, sample_rate: int,
            limits: MediaLimits) -> AudioTrack:
    audio = container.streams.audio[0]
    video = container.streams.video[0] if container.streams.video else None
    origin = (_stream_start(video) if video is not None else None) or 0.0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    video_pts: list[int] = []
    first_time: float | None = None
    n_samples = 0
    streams = (audio, video) if video is not None else (audio,)
    for packet in container.demux(*streams):
        if packet.stream.type == "video":
            # Empty packets with a timestamp are repeated frames (AVI); the flush packet has no pts.
            if packet.pts is not None:
                video_pts.append(packet.pts)
            continue
        for frame in packet.decode():
            if first_time is None and frame.time is not None:
                first_time = float(frame.time)
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            n_samples += frame.samples
            if frame.sample_rate:
                # bounded by the samples decoded, not the timestamps: a crafted stream may hold them still
                check_elapsed(path, n_samples / frame.sample_rate, limits, f"the audio at sample {n_samples}")
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if first_time is None:
        first_time = _stream_start(audio)
    if first_time is None:
        first_time = origin
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    pts_s = np.zeros(0)
    if video is not None and video.time_base and video_pts:
        pts_s = np.sort(np.asarray(video_pts, dtype=np.float64) * float(video.time_base)) - origin
    return AudioTrack(samples=samples, sample_rate=sample_rate, start_s=first_time - origin, video_pts_s=pts_s)
