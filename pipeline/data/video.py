"""Facts about a video file read with PyAV: frame rate, frame count, audio stream and its extent.

The frame count is what the annotation lines are aligned to, so by default it is counted rather than
trusted from the container header. ``frame_count`` says how:

- ``"demux"`` (default) reads the file once: counts the video packets (no video decoding) and
  decodes the audio packets, so a corrupt audio payload (what the audio stages read) is caught here.
- ``"decode"`` decodes every video frame and the audio (slowest; also catches a corrupt picture).
- ``"header"`` trusts the container's frame count, then reads only the last second of packets to
  check that the file really reaches its declared end (a truncated download fails this). It decodes
  nothing, so a damaged payload in the middle of the file is not seen. A container that cannot seek
  to its end or declares no count, or whose audio ends before that last second (to measure where it
  ends), is read as in ``"demux"``.

Every mode measures where the audio starts and ends on the video clock (``audio_start_s`` /
``audio_end_s``), so a soundtrack shorter than the picture is found before any audio stage runs. A
file that cannot be opened, has no video stream, or cannot deliver the frames its header declares is
a :class:`VideoError` naming the file (and the frame or the time where reading failed).

Example (a 0.4 s, 25 fps video without sound):
    >>> import tempfile, skimage.data
    >>> from pipeline.data.synth.photo_video import write_photo_video
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     video = write_photo_video(f"{tmp}/clip.mp4", skimage.data.astronaut(), n_frames=10, audio_hz=None)
    ...     info = probe_video(video)
    >>> info.fps, info.n_frames, info.has_audio, info.sample_rate
    (25.0, 10, False, None)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.data.media_open import MediaLimits, check_elapsed, check_frame_size, check_header, open_media
from pipeline.error_words import error_words

FRAME_COUNT_MODES: tuple[str, ...] = ("header", "demux", "decode")
# "header" mode reads the packets of this last stretch of the declared duration (plus back to the
# keyframe before it); a second covers the final packets of any common container and stays cheap.
TAIL_S = 1.0
# "header" mode derives the last frame's index from its timestamp; one frame of slack absorbs the
# rounding of variable-rate timestamps, while any real truncation loses far more.
TAIL_SLACK_FRAMES = 1


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
    width: int              # the stored picture's size (before any display rotation)
    height: int
    # the audio's first and last instant (s) on the video clock (0 = first frame); None without audio
    audio_start_s: float | None = None
    audio_end_s: float | None = None

    @property
    def duration_s(self) -> float:
        """The picture's duration: ``n_frames / fps``."""
        return self.n_frames / self.fps

    def audio_missing_share(self) -> float | None:
        """Share (0..1) of the picture's duration that no audio covers; ``None`` without an audio stream."""
        if not self.has_audio:
            return None
        if self.audio_start_s is None or self.audio_end_s is None:
            return 1.0   # an audio stream without a single decodable sample
        covered = min(self.audio_end_s, self.duration_s) - max(self.audio_start_s, 0.0)
        return min(1.0, max(0.0, 1.0 - max(covered, 0.0) / self.duration_s))


@dataclass
class _Reading:
    """What a pass over the packets found."""

    frames: int = 0                     # video frames counted (or, from the tail, the last frame's index + 1)
    audio_start_s: float | None = None
    audio_end_s: float | None = None

    def add_audio(self, start_s: float, end_s: float) -> None:
        """Widen the audio extent to include ``[start_s, end_s]``."""
        self.audio_start_s = start_s if self.audio_start_s is None else min(self.audio_start_s, start_s)
        self.audio_end_s = end_s if self.audio_end_s is None else max(self.audio_end_s, end_s)


def probe_video(path: str | Path, frame_count: str = "demux", limits: MediaLimits = MediaLimits()) -> VideoInfo:
    """Return the :class:`VideoInfo` of ``path``, counting frames as ``frame_count`` says; a file whose header
    declares more than ``limits`` is refused before anything is read."""
    path = Path(path)
    if frame_count not in FRAME_COUNT_MODES:
        raise ValueError(f"frame_count must be one of {FRAME_COUNT_MODES}, got {frame_count!r}")
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with open_media(path, limits) as container:
            check_header(path, container, limits)
            info = _describe(path, container)
            reading = None
            if frame_count == "header" and info.header_frames > 0:
                reading = _read_tail(path, container, info)
        if reading is None:
            with open_media(path, limits) as container:
                reading = _read_all(path, container, decode_video=frame_count == "decode")
            n_frames = reading.frames
            _check_counted(path, info.header_frames, n_frames)
        else:
            n_frames = info.header_frames
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot read video ({error_words(exc, path)}); the file is corrupt or truncated"
                         ) from exc
    return dataclasses.replace(info, n_frames=n_frames, audio_start_s=reading.audio_start_s,
                               audio_end_s=reading.audio_end_s)


def video_stream(path: str | Path, container: av.container.InputContainer) -> tuple[av.VideoStream, float]:
    """Return the first video stream of an open container and its frame rate, or a clear error."""
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream (not a video file, or a corrupt one)")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoError(f"{path}: the video stream declares no frame rate")
    return stream, float(rate)


def _describe(path: Path, container: av.container.InputContainer) -> VideoInfo:
    """What the header says (``n_frames`` is the declared count, 0 when none)."""
    stream, rate = video_stream(path, container)
    header_frames = int(stream.frames or 0)
    audio = container.streams.audio
    sample_rate = int(audio[0].rate or audio[0].codec_context.sample_rate or 0) if audio else 0
    return VideoInfo(
        path=str(path),
        fps=rate,
        n_frames=header_frames,
        header_frames=header_frames,
        has_audio=bool(audio),
        sample_rate=sample_rate or None,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
    )


def _check_counted(path: Path, header_frames: int, n_frames: int) -> None:
    if n_frames == 0:
        raise VideoError(f"{path}: the video stream holds no frames")
    if header_frames and n_frames < header_frames:
        raise VideoError(
            f"{path}: truncated video: the header declares {header_frames} frames but only "
            f"{n_frames} can be read (frames {n_frames}..{header_frames - 1} are missing or damaged)"
        )


def _origin_s(container: av.container.InputContainer) -> float:
    """The video clock's zero: the video stream's first presentation time (s)."""
    stream = container.streams.video[0]
    if stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _read_all(path: Path, container: av.container.InputContainer, decode_video: bool) -> _Reading:
    """Read every packet: count (or decode) the video frames, decode the audio."""
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    origin = _origin_s(container)
    reading = _Reading()
    for packet in container.demux(*([video] + ([audio] if audio is not None else []))):
        if packet.stream.type == "video":
            if decode_video:
                try:
                    reading.frames += len(packet.decode())
                except av.FFmpegError as exc:
                    raise VideoError(f"{path}: frame {reading.frames}: cannot decode the picture "
                                     f"({error_words(exc, path)}); the file is corrupt or truncated") from exc
            elif packet.size > 0 or packet.pts is not None:
                # An empty packet with a timestamp is a repeated frame (AVI); the flush packet has neither.
                reading.frames += 1
            continue
        _decode_audio_packet(path, packet, origin, reading)
    return reading


def _decode_audio_packet(path: Path, packet: av.Packet, origin: float, reading: _Reading) -> None:
    """Decode one audio packet (a corrupt payload is a :class:`VideoError` with its time) and note its extent."""
    try:
        frames = packet.decode()
    except av.FFmpegError as exc:
        at = f" at {float(packet.pts * packet.time_base) - origin:.2f} s" if packet.pts is not None else ""
        raise VideoError(f"{path}: audio{at}: cannot decode the sound ({error_words(exc, path)}); "
                         "the file is corrupt or truncated") from exc
    for frame in frames:
        if frame.time is not None and frame.sample_rate:
            start = float(frame.time) - origin
            reading.add_audio(start, start + frame.samples / frame.sample_rate)


def _read_tail(path: Path, container: av.container.InputContainer, info: VideoInfo) -> _Reading | None:
    """Check from the last ``TAIL_S`` of packets that the file reaches its declared end.

    Returns ``None`` when the container cannot seek there, or holds no packet there (the caller then
    reads the whole file and counts). The audio extent comes from packet timestamps (no decoding); when
    the audio ends before the tail, it is ``None`` too, and the caller reads the whole file.
    """
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    origin = _origin_s(container)
    declared_s = info.header_frames / info.fps
    target_s = origin + declared_s - TAIL_S
    if target_s > 0:
        try:
            container.seek(int(target_s / video.time_base), stream=video, backward=True, any_frame=False)
        except av.FFmpegError:
            return None
    last_pts_s: float | None = None
    reading = _Reading()
    for packet in container.demux(*([video] + ([audio] if audio is not None else []))):
        if packet.pts is None:
            continue
        start = float(packet.pts * packet.time_base) - origin
        if packet.stream.type == "video":
            last_pts_s = start if last_pts_s is None else max(last_pts_s, start)
        else:
            reading.add_audio(start, start + float((packet.duration or 0) * packet.time_base))
    if last_pts_s is None or (audio is not None and reading.audio_end_s is None):
        return None
    delivered = int(round(last_pts_s * info.fps)) + 1
    if delivered < info.header_frames - TAIL_SLACK_FRAMES:
        raise VideoError(
            f"{path}: truncated video: the header declares {info.header_frames} frames ({declared_s:.2f} s) "
            f"but the stream ends at frame {delivered - 1} ({last_pts_s:.2f} s)"
        )
    reading.frames = delivered
    if audio is not None:
        # The tail saw only the audio's end; its start is the header's (or the picture's, when unknown).
        declared_start = audio.start_time is not None and audio.time_base
        reading.audio_start_s = float(audio.start_time * audio.time_base) - origin if declared_start else 0.0
    return reading


def decode_frames(video_path: str | Path, need_pixels: bool = True,
                  limits: MediaLimits = MediaLimits()) -> Iterator[tuple[float, float, np.ndarray | None]]:
    """Yield ``(timestamp s from the first frame, fps, (H, W, 3) uint8 RGB frame or None)`` for every decoded
    frame, in decoding order; a still image, an empty or undecodable video, or one beyond ``limits`` is a
    :class:`VideoError` (or :class:`~pipeline.data.media_open.MediaLimitError`) naming it.

    Each frame is as a viewer sees it (:func:`display_image`: the display matrix applied) and contiguous,
    so every reader of pixels (predict, crop, the benchmarks) gets the same picture from here.
    """
    video_path = Path(video_path)
    try:
        with open_media(video_path, limits) as container:
            if is_still_image(container):
                raise VideoError(
                    f"{video_path}: a still image ({container.format.name}), not a video; only videos are read "
                    f"(make one from a photograph with pipeline.data.synth.photo_video.write_photo_video)"
                )
            check_header(video_path, container, limits)
            stream, fps = video_stream(video_path, container)
            first: float | None = None
            count = 0
            for count, frame in enumerate(container.decode(stream), start=1):
                where = f"frame {count - 1}"
                check_frame_size(video_path, frame.width, frame.height, limits, where)
                # a count past max_duration_s at the declared rate bounds a stream whose timestamps stand still
                check_elapsed(video_path, (count - 1) / fps, limits, where)
                t = frame.time if frame.time is not None else (count - 1) / fps
                first = t if first is None else first
                check_elapsed(video_path, t - first, limits, where)
                image = display_image(frame) if need_pixels else None
                yield t - first, fps, image
            if count == 0:
                raise VideoError(f"{video_path}: the video stream holds no frames")
    except av.FFmpegError as exc:
        raise VideoError(f"{video_path}: cannot decode video ({error_words(exc, video_path)})") from exc


def display_rotation(frame: av.VideoFrame) -> int:
    """The counter-clockwise turn (0, 90, 180 or 270 degrees) that shows ``frame`` as its display matrix says.

    Phones store a portrait clip as landscape pictures plus a display matrix (``-90``: turn clockwise);
    PyAV reports its angle as ``frame.rotation``. An angle between quarter turns is rounded to the
    nearest one, as players do.
    """
    return int(round(float(frame.rotation or 0) / 90.0)) % 4 * 90


def first_frame_rotation(video_path: str | Path, limits: MediaLimits = MediaLimits()) -> int:
    """The :func:`display_rotation` of ``video_path``'s first frame (0 for a file without a decodable frame),
    for writers that must size their output before the frames arrive; a header beyond ``limits`` is refused."""
    with open_media(video_path, limits) as container:
        check_header(video_path, container, limits)
        if not container.streams.video:
            return 0
        for frame in container.decode(container.streams.video[0]):
            return display_rotation(frame)
    return 0


def display_image(frame: av.VideoFrame) -> np.ndarray:
    """``frame`` as a viewer sees it: (H, W, 3) uint8 RGB, turned by its display matrix, C-contiguous.

    ``to_ndarray`` returns a view with FFmpeg's padded row stride (an 854-pixel-wide frame has rows of
    2,592 bytes, not 2,562); dlib's detector reads such an array as if it were unpadded, so the same
    frame would give detections that depend on the padding bytes. A contiguous copy is what every
    consumer gets.
    """
    image = frame.to_ndarray(format="rgb24")
    turns = display_rotation(frame) // 90
    if turns:
        image = np.rot90(image, turns)   # np.rot90 turns counter-clockwise, as the display matrix's angle
    return np.ascontiguousarray(image)


def is_still_image(container: av.container.InputContainer) -> bool:
    """Whether PyAV opened a picture file (JPEG, PNG, BMP, TIFF, WebP, a one-frame GIF) rather than a video."""
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):   # FFmpeg's single-picture demuxers
        return True
    return name == "gif" and all((s.frames or 0) <= 1 for s in container.streams.video)
