"""One piece of work per video, where one bad video is reported by name and the others are still done.

Example:
    >>> done, failed = for_each_video(["a.mp4", "b.mp4"], lambda video: video.stem.upper())
    >>> done, failed
    (['A', 'B'], {})
    >>> done, failed = for_each_video(["a.mp4"], lambda video: int("x"))
    >>> failed["a.mp4"]
    "a.mp4: invalid literal for int() with base 10: 'x'"
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import av

from pipeline.error_words import error_words

T = TypeVar("T")


def check_unique_stems(videos: Sequence[str | Path], writes: str) -> None:
    """Refuse two videos with one stem: both would write ``writes`` (e.g. ``"{stem}.csv"``) of the same name."""
    stems: dict[str, str] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in stems:
            raise ValueError(f"videos {stems[stem]} and {video} would both write {writes.format(stem=stem)}; "
                             f"run them separately")
        stems[stem] = str(video)


def for_each_video(videos: Sequence[str | Path], work: Callable[[Path], T]) -> tuple[list[T], dict[str, str]]:
    """``work(video)`` for every video, in order; return the results and ``{video: message}`` of the failures.

    A video's bad input (ValueError, OSError, an FFmpeg error) is recorded as one message naming
    the video, in words (:func:`~pipeline.error_words.error_words`: no errno), and the next video
    runs; any other exception is a bug and stops the run. Nothing is logged here: the caller prints
    each failure once.
    """
    done: list[T] = []
    failed: dict[str, str] = {}
    for video in videos:
        try:
            done.append(work(Path(video)))
        except (ValueError, OSError, av.FFmpegError) as exc:
            words = error_words(exc, shown=video)
            failed[str(video)] = words if str(video) in words else f"{video}: {words}"
    return done, failed
