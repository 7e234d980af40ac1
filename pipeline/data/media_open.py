"""Opening a video or audio file for reading: the local file only, of bounded picture size and duration.

Every media file the pipeline reads comes from outside (a dataset, a user's clips), and FFmpeg would
otherwise do more than read it: a text file named ``clip.mp4`` holding an HLS playlist (``#EXTM3U``)
or a concat list makes the hls/concat demuxer open the files or URLs it lists, so a "video" could
read any local file into its pictures, or reach the network. :func:`open_media` therefore opens

- through FFmpeg's ``file`` protocol only (``protocol_whitelist``), so no URL, ``pipe:``,
  ``concat:`` or ``subfile:`` name is followed, by the file itself or by a demuxer it reaches;
- with one of :data:`DEMUXERS` only (``format_whitelist``): the containers of videos and soundtracks,
  and FFmpeg's single-picture demuxers (so a photograph is refused by name later, not as "unknown
  format"). Playlist and list demuxers (hls, dash, concat, ...) are never among them.

and :func:`check_header` refuses, before a single frame is decoded, a picture larger than
``max_pixels`` or a declared duration above ``max_duration_s`` (a crafted header declaring 65535x65535
would otherwise have each decoded RGB frame take 12 GiB). A stream whose frames grow or run on past
its header is caught frame by frame with :func:`check_frame_size` and :func:`check_elapsed`.

Example:
    >>> limits = MediaLimits()
    >>> limits.max_pixels, limits.max_duration_s
    (33177600, 10800.0)
    >>> check_frame_size("clip.mp4", 3840, 2160, limits, "frame 0")
    >>> check_frame_size("clip.mp4", 65535, 65535, limits, "frame 0")
    Traceback (most recent call last):
    ...
    pipeline.data.media_open.MediaLimitError: clip.mp4: frame 0 is 65535x65535 pixels, above the limit of 33177600 (max_pixels)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from pipeline.config import ConfigError

# FFmpeg demuxer names (a demuxer may carry several, comma-separated, as "mov,mp4,m4a,3gp,3g2,mj2"; a
# name in this list admits it). Video containers, soundtrack containers, and the single-picture
# demuxers that pipeline.data.video.is_still_image recognises to refuse photographs by name.
DEMUXERS: tuple[str, ...] = (
    "mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "asf", "h264", "hevc", "m4v",
    "wav", "mp3", "aac", "flac",
    "image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe", "gif",
)
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(DEMUXERS)}


class MediaOpenError(ValueError):
    """A file FFmpeg cannot open as a local media container; the message names the file."""


class MediaLimitError(ValueError):
    """A media file is larger or longer than the pipeline reads; the message names the file and the limit."""


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on what one media file may hold (the ``predict.limits`` params section; defaults elsewhere).

    The defaults admit 8K UHD (7680x4320) in either orientation and three hours: a movie-length clip
    from any current camera. What they bound: one decoded RGB frame stays under 100 MB (99.5 MB at
    8K), and the soundtrack the audio stages hold whole stays under 0.7 GB (16 kHz float32 is 64 KB
    a second: 0.69 GB for three hours, plus 0.55 GB of log-mels), where a crafted header could
    otherwise ask for gigabytes per frame.
    """

    max_pixels: int = 7680 * 4320     # width x height of one picture
    max_duration_s: float = 3 * 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_pixels <= 1 << 30:
            raise ConfigError(f"must be in [1, {1 << 30}], got {self.max_pixels}", key="max_pixels")
        if not 0.0 < self.max_duration_s <= 7 * 24 * 3600.0:
            raise ConfigError(f"must be in (0, 604800] seconds, got {self.max_duration_s}", key="max_duration_s")


def open_media(path: str | Path, limits: MediaLimits = MediaLimits()) -> av.container.InputContainer:
    """Open ``path`` for reading with PyAV: the local file only, through one of :data:`DEMUXERS`.

    FFmpeg's decoders are told ``limits.max_pixels`` (their ``max_pixels`` option), both while the
    file is opened (FFmpeg decodes a first frame to learn a stream's parameters) and for every frame
    decoded later, so no picture above the limit is ever allocated; :func:`check_header` then names
    the file and the limit. A file FFmpeg would open only through another demuxer or protocol (a
    playlist, a list of files) is a :class:`MediaOpenError` naming it; any other failure stays PyAV's
    error (``av.FFmpegError``, ``OSError``), which callers report as a corrupt or missing file.
    """
    decoder_options = {"max_pixels": str(limits.max_pixels)}
    try:
        container = av.open(str(path), container_options=dict(_OPEN_OPTIONS), options=decoder_options)
    except av.error.ArgumentError as exc:   # EINVAL: what FFmpeg returns for a demuxer off the whitelist
        raise MediaOpenError(
            f"{path}: not a video or audio container the pipeline reads (FFmpeg: {exc.strerror or exc}); "
            "playlists and lists of other files (hls, concat, ...) are never followed, only local media files"
        ) from exc
    for stream in container.streams.video:
        stream.codec_context.options = dict(decoder_options)
    return container


def check_header(path: str | Path, container: av.container.InputContainer, limits: MediaLimits) -> None:
    """Refuse a file whose header declares a picture or a duration above ``limits`` (nothing decoded yet)."""
    for stream in container.streams.video:
        context = stream.codec_context
        check_frame_size(path, int(context.width or 0), int(context.height or 0), limits,
                         f"video stream {stream.index}")
    durations = [float(stream.duration * stream.time_base) for stream in container.streams
                 if stream.duration is not None and stream.time_base]
    if container.duration is not None:
        durations.append(container.duration / av.time_base)
    if durations:
        check_elapsed(path, max(durations), limits, "the header")


def check_frame_size(path: str | Path, width: int, height: int, limits: MediaLimits, where: str) -> None:
    """Refuse a ``width`` x ``height`` picture (at ``where``, e.g. ``"frame 12"``) above ``limits.max_pixels``."""
    if width * height > limits.max_pixels:
        raise MediaLimitError(f"{path}: {where} is {width}x{height} pixels, above the limit of "
                              f"{limits.max_pixels} (max_pixels)")


def check_elapsed(path: str | Path, seconds: float, limits: MediaLimits, where: str) -> None:
    """Refuse a file that reaches ``seconds`` (by ``where``: the header, or a frame) beyond ``limits.max_duration_s``."""
    if seconds > limits.max_duration_s:
        raise MediaLimitError(f"{path}: {where} reaches {seconds:.2f} s, above the limit of "
                              f"{limits.max_duration_s:g} s (max_duration_s)")
