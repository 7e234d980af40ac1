"""``mmaffect crop``: Aff-Wild2 ``cropped_aligned`` folders (aligned 112x112 face crops) for new videos."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.faces.crop import crop_videos, videos_in
from pipeline.predict.video import PredictConfig
from stages.common import exit_on_failed_videos, load_config, run_or_exit, setup_logging


@click.command(name="crop")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file whose `predict` section sets the detector, tracking and limits on a video (defaults otherwise).")
@click.option("--min-frames", type=click.IntRange(min=1), default=10, show_default=True,
              help="Faces seen in fewer frames are left out.")
def command(source: Path, out: Path, params_path: Path | None, min_frames: int) -> None:
    """Write aligned face crops of the video SOURCE, or of every .mp4/.avi under the folder SOURCE, into OUT.

    \b
    OUT/<video>/00001.jpg ...          one face (crop of frame i is {i+1:05d}.jpg)
    OUT/<video>_left/, <video>_right/  two faces, by their position in the frame
    OUT/.done/<video>.json             written last; a video with one is skipped next time

    Make OUT the cropped_aligned/ folder of an Aff-Wild2-layout root, and the videos can go through
    `prepare` and the pipeline. A video that fails is reported by name while the others complete;
    the exit status is then 1.
    """
    setup_logging()
    cfg = load_config(params_path, "predict", PredictConfig) if params_path else PredictConfig()
    videos = run_or_exit(videos_in, source)
    done, failed = run_or_exit(crop_videos, videos, out, cfg.detector, cfg.tracking, min_frames, cfg.limits)
    for summary in done:
        folders = ", ".join(f"{name}/ ({n} crops)" for name, n in summary.folders.items()) or "no face"
        state = "already complete" if summary.skipped else f"{summary.frames} frames"
        left_out = f", {summary.dropped} face(s) left out" if summary.dropped else ""
        click.echo(f"{summary.video}: {state}: {folders}{left_out}")
    exit_on_failed_videos(failed, len(videos))


if __name__ == "__main__":
    command()
