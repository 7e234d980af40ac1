"""One piece of work per video: each failure is one message in words, naming the video, logged nowhere."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest

from pipeline.video_batch import for_each_video


def _open(video: Path) -> int:
    with av.open(str(video)) as container:
        return len(container.streams)


def test_a_file_that_is_no_video_fails_in_words_without_ffmpegs_error_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00" * 2048)
    with caplog.at_level(logging.DEBUG):
        done, failed = for_each_video([broken], _open)
    assert done == []
    assert failed == {str(broken): f"{broken}: Invalid data found when processing input"}
    # the caller prints the failure; a log line too would show it twice
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_os_error_on_another_file_names_that_file(tmp_path: Path) -> None:
    def write(video: Path) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / f"{video.stem}.csv"))

    _, failed = for_each_video([tmp_path / "a.mp4"], write)
    assert failed == {str(tmp_path / "a.mp4"): f"{tmp_path / 'a.mp4'}: {tmp_path / 'out' / 'a.csv'}: Permission denied"}


def test_an_error_naming_the_video_is_not_prefixed_twice(tmp_path: Path) -> None:
    def missing(video: Path) -> None:
        raise FileNotFoundError(f"video not found: {video}")

    _, failed = for_each_video([tmp_path / "a.mp4"], missing)
    assert failed == {str(tmp_path / "a.mp4"): f"video not found: {tmp_path / 'a.mp4'}"}
