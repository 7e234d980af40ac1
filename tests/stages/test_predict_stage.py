"""``mmaffect predict`` through click: default model paths, outputs (CSV, overlay, timelines), per-video
failures, params, and the progress display on and off a terminal."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data
import yaml
from click.testing import CliRunner
from PIL import Image

from _predict_models import build_predict_models, export_pre_va_sequence
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio
from pipeline.data.synth.photo_video import write_photo_video
from pipeline.model_files.audio import quantize_tdnn
from pipeline.model_files.int8 import CalibrationConfig
from pipeline.model_files.visual import quantize_visual
from pipeline.predict.pass_progress import FrameProgress
from stages.cli import main
from stages.progress_bar import FrameProgressDisplay


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict-stage") / "cache"
    build_predict_models(root)
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("predict-stage-videos")
    image = skimage.data.astronaut()
    return [write_photo_video(folder / "a.mp4", image, n_frames=8),
            write_photo_video(folder / "b.mp4", image, n_frames=5, audio_hz=None)]


def test_predict_writes_one_csv_per_video(cache, videos, tmp_path: Path):
    out = tmp_path / "out"
    args = ["predict", *map(str, videos), "--out", str(out), "--models-dir", str(cache), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv"]
    assert len((out / "b.csv").read_text().splitlines()) == 1 + 5
    assert "a.mp4: 8 frames, 8 with a face, 8 with audio, 0 low-confidence" in result.output
    assert "on a real face their output means nothing" in result.output   # what demo models are worth


def test_predict_a_folder_skips_the_videos_whose_csv_is_complete(cache, videos, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("complete from an earlier run\n")
    # what a killed run leaves: its temporary, never under the final name
    (out / ".b.csv.tmp-999999999").write_text("frame,timestamp\n0,")
    args = ["predict", str(videos[0].parent), "--out", str(out), "--models-dir", str(cache), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "a.csv is complete, skipped" in result.output and "b.mp4: 5 frames" in result.output
    assert (out / "a.csv").read_text() == "complete from an earlier run\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv"]
    assert len((out / "b.csv").read_text().splitlines()) == 1 + 5
    result = CliRunner().invoke(main, [*args, "--redo"])
    assert result.exit_code == 0, result.output
    assert (out / "a.csv").read_text().startswith("frame,timestamp,face_id,confidence,x,y,w,h,lm0_x,")


def test_predict_reports_a_bad_video_and_still_writes_the_others(cache, videos, tmp_path: Path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00" * 2048)
    out = tmp_path / "out"
    args = ["predict", str(broken), str(videos[1]), "--out", str(out), "--models-dir", str(cache)]
    result = CliRunner().invoke(main, args)   # output holds stdout and stderr
    assert result.exit_code == 1
    assert f"FAILED: {broken}" in result.output and "1 of 2 videos failed" in result.output
    # once, in words: no log line repeating it, no FFmpeg error number
    failure = [line for line in result.output.splitlines() if str(broken) in line]
    assert len(failure) == 1 and "Errno" not in failure[0], result.output
    assert "Invalid data found when processing input" in failure[0]
    assert sorted(p.name for p in out.iterdir()) == ["b.csv"]


def test_predict_refuses_a_still_image_by_name(cache, videos, tmp_path: Path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(photo), str(videos[1]), "--out", str(out),
                                       "--models-dir", str(cache), "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"FAILED: {photo}: a still image" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["b.csv"]


@pytest.fixture
def nothing_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any video's work fails the test: the checks under test must come before it."""
    import pipeline.predict.video

    def computed(video_path, *args, **kwargs):
        raise AssertionError(f"{video_path} was computed")

    monkeypatch.setattr(pipeline.predict.video, "_visual_pass", computed)


def test_predict_refuses_an_output_folder_it_cannot_write_before_any_video(cache, videos, tmp_path: Path,
                                                                          nothing_computed):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["predict", str(videos[0]), "--out", str(blocker / "out"),
                                       "--models-dir", str(cache), "--device", "cpu"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"Error: {blocker / 'out'}: the output folder (--out) cannot be written" in result.output


def test_predict_refuses_an_overlay_that_is_the_input_before_any_video(cache, videos, tmp_path: Path,
                                                                      nothing_computed):
    source = tmp_path / "clip.mp4"
    shutil.copyfile(videos[1], source)
    before = source.read_bytes()
    result = CliRunner().invoke(main, ["predict", str(source), "--out", str(tmp_path / "out"), "--models-dir",
                                       str(cache), "--device", "cpu", "--overlay", str(source)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"Error: {source}: the overlay {source} would overwrite the input video itself" in result.output
    # a folder of videos as its own overlay folder: the same refusal
    result = CliRunner().invoke(main, ["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--models-dir",
                                       str(cache), "--device", "cpu", "--overlay", str(tmp_path)])
    assert result.exit_code == 1 and "would overwrite the input video itself" in result.output
    assert source.read_bytes() == before


def test_predict_names_a_missing_model(videos, tmp_path: Path):
    result = CliRunner().invoke(main, ["predict", str(videos[0]), "--out", str(tmp_path), "--models-dir",
                                       str(tmp_path / "nocache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(tmp_path / "nocache" / "sequence" / "sequence.onnx") in result.output


def test_predict_refuses_a_model_made_before_va_in_one_line(videos, tmp_path: Path):
    old = export_pre_va_sequence(tmp_path / "cache" / "sequence" / "sequence.onnx")
    result = CliRunner().invoke(main, ["predict", str(videos[0]), "--out", str(tmp_path / "out"), "--models-dir",
                                       str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"Error: {old}: no va_pred output (outputs au_logits, expr_logits): the model predates valence-arousal; "
        "export it again (train-sequence)"]
    assert not (tmp_path / "out").exists()


def test_predict_precision_int8_runs_the_int8_models_or_names_the_missing_one(cache, videos, tmp_path: Path,
                                                                             tiny_frames: Path):
    models = tmp_path / "cache"
    shutil.copytree(cache, models)
    args = ["predict", str(videos[0]), "--models-dir", str(models), "--device", "cpu"]
    missing = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "none"), "--precision", "int8"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert str(models / "audio" / "tdnn.int8.onnx") in missing.output and "train-audio" in missing.output
    quantize_visual(models / "onnx" / "visual.onnx", tiny_frames, config=CalibrationConfig(n_crops=16))
    mel = np.random.default_rng(0).normal(4.0, 2.0, size=(64, 600)).astype(np.float32)
    starts = np.arange(0, 480, 16)
    audio = VideoAudio(mel, starts, np.ones(len(starts), bool), AudioConfig().context_frames)
    quantize_tdnn(models / "audio" / "tdnn.onnx", {"noise": audio}, config=CalibrationConfig(n_crops=16))
    runs = {}
    for precision in ("float32", "int8"):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / precision), "--precision", precision])
        assert result.exit_code == 0, result.output
        runs[precision] = (tmp_path / precision / "a.csv").read_text().splitlines()
    assert runs["int8"][0] == runs["float32"][0] and len(runs["int8"]) == len(runs["float32"]) == 1 + 8
    assert runs["int8"][1:] != runs["float32"][1:]     # other models ran


def test_predict_reads_its_params_section(cache, videos, tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {"detector": {"min_face_px": 60}, "tracking": {"detect_every": 3}}}))
    args = ["predict", str(videos[1]), "--out", str(tmp_path / "o"), "--models-dir", str(cache),
            "--params", str(params)]
    assert CliRunner().invoke(main, args).exit_code == 0
    params.write_text(yaml.safe_dump({"predict": {"crop_margin": 0.25}}))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "unknown key(s) ['crop_margin']" in result.output


def test_predict_help_names_inputs_and_outputs():
    result = CliRunner().invoke(main, ["predict", "--help"])
    assert result.exit_code == 0
    for word in ("--out", "--models-dir", "--crops", "face_present", "audio_present", "low_confidence",
                 "valence", "arousal", "sequence.onnx"):
        assert word in result.output


# --overlay, --timelines and the progress display


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
    assert (_frame_count(overlays / "a.mp4"), _frame_count(overlays / "b.mp4")) == (8, 5)
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a_face0.png", "b.csv", "b_face0.png"]
    # not a terminal: plain progress lines, one per pass, and the rate over all videos
    assert "[1/2] " in result.output and "a.mp4 faces: 8/8 frames" in result.output
    assert "b.mp4 overlay: 5/5 frames" in result.output and "frames/s over all videos" in result.output
    assert "\r" not in result.output
    # complete with every output asked for: skipped; an overlay not made yet: predicted again
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("is complete, skipped") == 2, again.output
    (overlays / "b.mp4").unlink()
    again = CliRunner().invoke(main, args)
    assert "a.csv is complete, skipped" in again.output and "b.mp4: 5 frames" in again.output
    assert (overlays / "b.mp4").is_file()


def test_overlay_of_one_video_is_the_file_named(cache, videos, tmp_path: Path):
    target = tmp_path / "shown" / "astronaut_overlay.mp4"
    result = CliRunner().invoke(main, ["predict", str(videos[1]), "--out", str(tmp_path / "out"),
                                       "--models-dir", str(cache), "--device", "cpu", "--overlay", str(target)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in target.parent.iterdir()] == ["astronaut_overlay.mp4"]
    assert _frame_count(target) == 5


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_occasional_lines_elsewhere(monkeypatch: pytest.MonkeyPatch):
    import itertools

    import stages.progress_bar

    ticks = itertools.count()
    monkeypatch.setattr(stages.progress_bar.time, "perf_counter", lambda: next(ticks) * 0.1)   # a frame per 0.1 s
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


def test_progress_of_a_one_frame_video_shows_no_rate(monkeypatch: pytest.MonkeyPatch):
    import stages.progress_bar

    clock = iter([10.0, 10.0, 10.0, 10.0, 10.0])   # the frame and the end read the same instant
    monkeypatch.setattr(stages.progress_bar.time, "perf_counter", lambda: next(clock))
    for stream in (io.StringIO(), _Terminal()):
        display = FrameProgressDisplay(["one.mp4"], stream, every_s=3600.0)
        display(FrameProgress("one.mp4", "faces", 1, 1))
        display.close()
        shown = stream.getvalue()
        assert "frames/s" not in shown, shown
        assert "predict: 1 frames in 0.0 s" in shown


def test_progress_rate_counts_the_frames_after_the_clock_started(monkeypatch: pytest.MonkeyPatch):
    import stages.progress_bar

    clock = iter([0.0, 2.0, 2.0, 2.0])
    monkeypatch.setattr(stages.progress_bar.time, "perf_counter", lambda: next(clock))
    log = io.StringIO()
    display = FrameProgressDisplay(["clip.mp4"], log, every_s=3600.0)
    display(FrameProgress("clip.mp4", "faces", 1, 21))
    display(FrameProgress("clip.mp4", "faces", 21, 21))
    display.close()
    assert "clip.mp4 faces: 21/21 frames, 10.0 frames/s" in log.getvalue()


def test_predict_low_latency_writes_the_same_columns(cache, videos, tmp_path: Path):
    args = ["predict", str(videos[0]), "--models-dir", str(cache), "--device", "cpu"]
    offline = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "offline")])
    causal = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "causal"), "--low-latency"])
    assert offline.exit_code == 0 and causal.exit_code == 0, causal.output
    offline_lines = (tmp_path / "offline" / "a.csv").read_text().splitlines()
    causal_lines = (tmp_path / "causal" / "a.csv").read_text().splitlines()
    assert causal_lines[0] == offline_lines[0] and len(causal_lines) == len(offline_lines) == 1 + 8
    assert causal_lines[1:] != offline_lines[1:]
    alone = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x"), "--causal-audio"])
    assert alone.exit_code == 2 and "--causal-audio is an option of --low-latency" in alone.output
