"""`mmaffect crop`: a folder of videos into cropped_aligned folders; a bad video named, the exit status 1."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from pipeline.data.synth.photo_video import write_photo_video
from pipeline.faces.moving_photos import astronaut
from stages.cli import main


def test_crop_a_folder_reports_the_bad_video_and_resumes(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    write_photo_video(videos / "talk.mp4", astronaut(), n_frames=8, audio_hz=None)
    (videos / "broken.avi").write_bytes(b"not a video" * 50)
    out = tmp_path / "cropped_aligned"
    result = CliRunner().invoke(main, ["crop", str(videos), str(out), "--min-frames", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"FAILED: {videos / 'broken.avi'}" in result.output
    assert f"{videos / 'talk.mp4'}: 8 frames: talk/ (8 crops)" in result.output
    assert sorted(p.name for p in (out / "talk").iterdir()) == [f"{i:05d}.jpg" for i in range(1, 9)]
    again = CliRunner().invoke(main, ["crop", str(videos / "talk.mp4"), str(out)])
    assert again.exit_code == 0 and "already complete" in again.output


def test_crop_reads_the_predict_params_section(tmp_path: Path) -> None:
    video = write_photo_video(tmp_path / "talk.mp4", astronaut(), n_frames=4, audio_hz=None)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {"tracking": {"detect_every": 0}}}))
    result = CliRunner().invoke(main, ["crop", str(video), str(tmp_path / "out"), "--params", str(params)])
    assert result.exit_code == 2 and "detect_every" in result.output and "Traceback" not in result.output


def test_crop_refuses_a_crafted_file_and_a_video_beyond_the_params_limits(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    talk = write_photo_video(videos / "talk.mp4", astronaut(), n_frames=4, audio_hz=None)
    # a concat list posing as a video: FFmpeg would read talk.mp4 (or any file it names) through it
    (videos / "list.mp4").write_text(f"ffconcat version 1.0\nfile '{talk}'\n")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {"limits": {"max_pixels": 1000}}}))
    result = CliRunner().invoke(main, ["crop", str(videos), str(tmp_path / "out"), "--params", str(params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"FAILED: {videos / 'list.mp4'}: not a video or audio container the pipeline reads" in result.output
    assert f"FAILED: {talk}: video stream 0 is 512x512 pixels, above the limit of 1000 (max_pixels)" in result.output
