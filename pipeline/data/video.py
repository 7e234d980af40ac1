"""Facts about a video file read with PyAV: frame rate, frame count, audio stream and sample rate.

The frame count is what the annotation lines are aligned to, so it is counted rather than trusted
from the container header: ``"demux"`` counts the video packets (no decoding, reads the file once),
``"decode"`` decodes every frame (slowest, catches corrupt payloads), ``"header"`` trusts the
container's frame count and demuxes only when the header has none. A file that cannot be opened,
has no video stream, or yields fewer frames than its header declares (a truncated download) is a
:class:`VideoError` naming the file.

Example (a 0.4 s, 25 fps video without sound):
    >>> import tempfile, skimage.data
    >>> from pipeline.predict.photo_video import write_photo_video
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     video = write_photo_video(f"{tmp}/clip.mp4", skimage.data.astronaut(), n_frames=10, audio_hz=None)
    ...     info = probe_video(video)
    >>> info.fps, info.n_frames, info.has_audio, info.sample_rate
    (25.0, 10, False, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

FRAME_COUNT_MODES: tuple[str, ...] = ("header", "demux", "decode")


class VideoError(ValueError):
    """A video file cannot be read or is incomplete; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about one video file."""

    path: str
    fps: float
    n_frames: int
    header_frames: int      # frame count the container declares (0 when it declares none)
    has_audio: bool
    sample_rate: int | None
    width: int
    height: int


def probe_video(path: str | Path, frame_count: str = "demux") -> VideoInfo:
    """Return the :class:`VideoInfo` of ``path``, counting frames as ``frame_count`` says."""
    path = Path(path)
    if frame_count not in FRAME_COUNT_MODES:
        raise ValueError(f"frame_count must be one of {FRAME_COUNT_MODES}, got {frame_count!r}")
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            return _probe_open(path, container, frame_count)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot read video ({exc}); the file is corrupt or truncated") from exc


def video_stream(path: str | Path, container: av.container.InputContainer) -> tuple[av.VideoStream, float]:
    """Return the first video stream of an open container and its frame rate, or a clear error."""
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream (not a video file, or a corrupt one)")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoError(f"{path}: the video stream declares no frame rate")
    return stream, float(rate)


def _probe_open(path: Path, container: av.container.InputContainer, frame_count: str) -> VideoInfo:
    stream, rate = video_stream(path, container)
    header_frames = int(stream.frames or 0)
    if frame_count == "header" and header_frames > 0:
        n_frames = header_frames
    elif frame_count == "decode":
        n_frames = sum(1 for _ in container.decode(stream))
    else:
        # An empty packet with a timestamp is a repeated frame (AVI); the final flush packet has neither.
        n_frames = sum(1 for packet in container.demux(stream) if packet.size > 0 or packet.pts is not None)
    if n_frames == 0:
        raise VideoError(f"{path}: the video stream holds no frames")
    if header_frames and n_frames < header_frames:
        raise VideoError(
            f"{path}: truncated video: the header declares {header_frames} frames but only "
            f"{n_frames} can be read"
        )
    audio = container.streams.audio
    sample_rate = int(audio[0].rate or audio[0].codec_context.sample_rate or 0) if audio else 0
    return VideoInfo(
        path=str(path),
        fps=rate,
        n_frames=n_frames,
        header_frames=header_frames,
        has_audio=bool(audio),
        sample_rate=sample_rate or None,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
    )
