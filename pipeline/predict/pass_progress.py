"""Progress of ``predict``: frames done per video and pass, reported to a callback the caller chooses.

The library only calls the callback (no terminal output of its own); ``mmaffect predict`` turns the
calls into a progress bar with frames/s (stages/progress_bar.py).

Example:
    >>> seen = []
    >>> report = progress_reporter(seen.append, "clip.mp4", "faces", total=3)
    >>> for _ in range(3):
    ...     report()
    >>> [(event.phase, event.done, event.total) for event in seen]
    [('faces', 1, 3), ('faces', 2, 3), ('faces', 3, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av

from pipeline.data.media_open import open_media

# The passes over a video's frames, in order: decode, find and embed the faces; then (only with an
# overlay) decode again, draw and encode.
PHASES: tuple[str, ...] = ("faces", "overlay")


@dataclass(frozen=True)
class FrameProgress:
    """``done`` frames of ``video`` went through pass ``phase`` (one of :data:`PHASES`), of ``total``.

    ``total`` is the frame count the video's header declares, or its duration times its frame rate,
    0 when neither is known; ``done`` can exceed it when the header is wrong.
    """

    video: str
    phase: str
    done: int
    total: int


ProgressCallback = Callable[[FrameProgress], None]


def progress_reporter(callback: ProgressCallback | None, video: str | Path, phase: str,
                      total: int) -> Callable[[], None]:
    """A function to call once per frame of ``phase``: it tells ``callback`` the frames done so far."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    done = 0

    def frame_done() -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(FrameProgress(str(video), phase, done, total))

    return frame_done


def expected_frames(video_path: str | Path) -> int:
    """The frame count the header of ``video_path`` declares, else duration x frame rate, else 0 (unknown)."""
    try:
        with open_media(video_path) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if rate and stream.duration and stream.time_base:
                return int(round(float(stream.duration * stream.time_base) * float(rate)))
            if rate and container.duration:
                return int(round(container.duration / av.time_base * float(rate)))
    except (av.FFmpegError, OSError, ValueError):   # MediaOpenError too
        return 0   # the decoding pass reports the broken video by name; progress only loses its total
    return 0
