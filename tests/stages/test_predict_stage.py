"""``mmaffect predict`` through click: default model paths, outputs, per-video failures, params."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import yaml
from click.testing import CliRunner
from PIL import Image

from _predict_models import build_predict_models
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio
from pipeline.quantize import CalibrationConfig, quantize_tdnn, quantize_visual
from pipeline.predict.photo_video import write_photo_video
from stages.cli import main


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


def test_predict_names_a_missing_model(videos, tmp_path: Path):
    result = CliRunner().invoke(main, ["predict", str(videos[0]), "--out", str(tmp_path), "--models-dir",
                                       str(tmp_path / "nocache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(tmp_path / "nocache" / "sequence" / "sequence.onnx") in result.output


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
                 "sequence.onnx"):
        assert word in result.output

