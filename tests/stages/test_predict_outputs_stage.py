"""``mmaffect predict --overlay --timelines`` through click, and the progress display on and off a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
import skimage.data
from click.testing import CliRunner

from _predict_models import build_predict_models
from pipeline.predict.photo_video import write_photo_video
from pipeline.predict.progress import FrameProgress
from stages.cli import main
from stages.progress import FrameProgressDisplay


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict-outputs-stage") / "cache"
    build_predict_models(root)
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("predict-outputs-videos")
    image = skimage.data.astronaut()
    return [write_photo_video(folder / "a.mp4", image, n_frames=6),
            write_photo_video(folder / "b.mp4", image, n_frames=4, audio_hz=None)]


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_overlays_of_a_folder_go_to_a_folder_with_timelines(cache, videos, tmp_path: Path):
    out, overlays = tmp_path / "out", tmp_path / "overlays"
    args = ["predict", str(videos[0].parent), "--out", str(out), "--models-dir", str(cache), "--device", "cpu",
            "--overlay", str(overlays), "--timelines"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in overlays.iterdir()) == ["a.mp4", "b.mp4"]
    assert (_frame_count(overlays / "a.mp4"), _frame_count(overlays / "b.mp4")) == (6, 4)
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a_face0.png", "b.csv", "b_face0.png"]
    # not a terminal: plain progress lines, one per pass, and the rate over all videos
    assert "[1/2] " in result.output and "a.mp4 faces: 6/6 frames" in result.output
    assert "b.mp4 overlay: 4/4 frames" in result.output and "frames/s over all videos" in result.output
    assert "\r" not in result.output
    # complete with every output asked for: skipped; an overlay not made yet: predicted again
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("is complete, skipped") == 2, again.output
    (overlays / "b.mp4").unlink()
    again = CliRunner().invoke(main, args)
    assert "a.csv is complete, skipped" in again.output and "b.mp4: 4 frames" in again.output
    assert (overlays / "b.mp4").is_file()


def test_overlay_of_one_video_is_the_file_named(cache, videos, tmp_path: Path):
    target = tmp_path / "shown" / "astronaut_overlay.mp4"
    result = CliRunner().invoke(main, ["predict", str(videos[1]), "--out", str(tmp_path / "out"),
                                       "--models-dir", str(cache), "--device", "cpu", "--overlay", str(target)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in target.parent.iterdir()] == ["astronaut_overlay.mp4"]
    assert _frame_count(target) == 4


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_occasional_lines_elsewhere():
    events = [FrameProgress("clip.mp4", "faces", done, 50) for done in range(1, 51)]
    terminal = _Terminal()
    display = FrameProgressDisplay(["clip.mp4"], terminal)
    for event in events:
        display(event)
    display.close()
    shown = terminal.getvalue()
    assert "[1/1] clip.mp4 faces" in shown and "50/50" in shown and "frames/s" in shown
    log = io.StringIO()
    display = FrameProgressDisplay(["clip.mp4"], log, every_s=3600.0)
    for event in events:
        display(event)
    display.close()
    lines = log.getvalue().splitlines()
    # only the end of the pass and the total: no line per frame, no terminal control characters
    assert len(lines) == 2 and lines[0].startswith("[1/1] clip.mp4 faces: 50/50 frames, ")
    assert lines[1].startswith("predict: 50 frames in ") and "\r" not in log.getvalue()
