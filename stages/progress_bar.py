"""A frames/s progress display on stderr for ``predict``: a click progress bar on a terminal, plain lines elsewhere.

On a terminal each video's pass gets a bar (``[2/5] clip.mp4 faces``) with its position, frames/s and
time left. When stderr is not a terminal (a log file, CI, tests) a bar would only fill the log with
control characters, so a plain line is printed every ``every_s`` seconds and when a pass ends. At the
end, one line gives the frames and frames/s over all the videos.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import click

from pipeline.predict.pass_progress import FrameProgress

# A rate over a shorter time is the timer's noise, not a speed (a 1-frame video would show 1e9 frames/s).
MIN_RATE_SECONDS = 0.05


def rate_text(frames: int, seconds: float) -> str:
    """``"12.5 frames/s"``, or ``""`` when ``frames`` over ``seconds`` is too few to be a rate."""
    if frames < 1 or seconds < MIN_RATE_SECONDS:
        return ""
    return f"{frames / seconds:.1f} frames/s"


class FrameProgressDisplay:
    """Callable receiving :class:`~pipeline.predict.pass_progress.FrameProgress` events; :meth:`close` ends it."""

    def __init__(self, videos: list[str], stream: IO[str] | None = None, every_s: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self.every_s = every_s
        self.order = {video: k for k, video in enumerate(videos, start=1)}
        self.count = len(videos)
        self.key: tuple[str, str] | None = None
        self.bar: Any = None
        self.started = self.last_print = self.last_event = 0.0
        self.shown = 0                 # frames of the current pass already shown on its bar
        self.first_done = 0            # frames the pass had done at its first event (the clock starts there)
        self.event: FrameProgress | None = None
        self.frames = 0                # frames of every finished pass, all videos
        self.first: float | None = None

    def __call__(self, event: FrameProgress) -> None:
        """Show that ``event.done`` frames of a video's pass are done."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if (event.video, event.phase) != self.key:
            self._end_pass()
            self.key, self.started, self.last_print, self.shown = (event.video, event.phase), now, now, 0
            self.first_done = event.done
            if self.interactive:
                self.bar = click.progressbar(length=max(event.total, 1), label=self._label(event), file=self.stream,
                                             show_pos=True, show_eta=True, item_show_func=lambda rate: rate)
                self.bar.__enter__()
        self.event, self.last_event = event, now
        if self.bar is not None:
            # past a wrong header's count the bar stays full
            step = min(event.done, self.bar.length) - self.shown
            self.shown += step
            self.bar.update(step, self._rate(event, now))
        elif now - self.last_print >= self.every_s:
            self.last_print = now
            self._line(event, now)

    def close(self) -> None:
        """End the current pass and print the frames/s over all the videos (when any frame was done)."""
        self._end_pass()
        if self.first is not None and self.frames:
            seconds = time.perf_counter() - self.first
            rate = rate_text(self.frames, seconds)
            over_all = f" ({rate} over all videos and passes)" if rate else ""
            click.echo(f"predict: {self.frames} frames in {seconds:.1f} s{over_all}", file=self.stream)

    def _end_pass(self) -> None:
        if self.event is None:
            return
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        else:
            # the rate up to the pass's last frame, not to whatever work followed it
            self._line(self.event, self.last_event)
        self.frames += self.event.done
        self.event = None

    def _label(self, event: FrameProgress) -> str:
        position = f"[{self.order[event.video]}/{self.count}] " if event.video in self.order else ""
        return f"{position}{event.video} {event.phase}"

    def _rate(self, event: FrameProgress, now: float) -> str:
        # the clock starts at the pass's first event, so the frames done before it are not counted
        return rate_text(event.done - self.first_done, now - self.started)

    def _line(self, event: FrameProgress, now: float) -> None:
        total = f"/{event.total}" if event.total else ""
        rate = self._rate(event, now)
        click.echo(f"{self._label(event)}: {event.done}{total} frames{', ' + rate if rate else ''}",
                   file=self.stream)
