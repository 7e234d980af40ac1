"""``mmaffect predict``: per-frame AU and expression probabilities and valence-arousal of new videos, as CSV files."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.faces.crop import videos_in
from pipeline.model_files.precision import DEFAULT_PRECISION
from pipeline.predict.video import PRECISIONS, PredictConfig, load_models, predict_videos
from stages.common import exit_on_failed_videos, device_option, load_config, run_or_exit, setup_logging
from stages.progress_bar import FrameProgressDisplay

_FILE = click.Path(dir_okay=False, path_type=Path)


# The default pipeline trains on the synthetic demo's drawn faces; nothing in the model files says
# which data trained them, so every run says what such a model is worth on a real face.
DEMO_MODELS_NOTE = (
    "note: models trained by the default pipeline learned the synthetic demo's drawn faces; on a real "
    "face their output means nothing. Meaningful predictions need models trained on labelled real-face "
    "video (Aff-Wild2, or your own AU/expression annotations in its layout: set data.root and run dvc repro)."
)


@click.command(name="predict")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives one <video stem>.csv per video.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default="cache", show_default=True,
              help="The pipeline's cache folder holding onnx/visual.onnx, audio/tdnn.onnx, sequence/sequence.onnx.")
@click.option("--visual-onnx", type=_FILE, default=None, help="Override MODELS_DIR/onnx/visual.onnx.")
@click.option("--audio-onnx", type=_FILE, default=None, help="Override MODELS_DIR/audio/tdnn.onnx.")
@click.option("--sequence-onnx", type=_FILE, default=None, help="Override MODELS_DIR/sequence/sequence.onnx.")
@click.option("--crops", "crops_root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Face crops instead of the detector: CROPS/<video stem>/00001.jpg... (cropped_aligned "
                   "layout), or CROPS/00001.jpg... for a single video.")
@click.option("--params", "params_path", type=_FILE, default=None,
              help="YAML file whose `predict` section sets the detector, tracking and limits on a video (defaults otherwise).")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Faces, audio windows and sequence windows per model call.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
              help="Run the visual and audio models at this precision: int8 takes visual.int8.onnx and "
                   "tdnn.int8.onnx beside them (written by finetune-visual and train-audio).")
@click.option("--redo", is_flag=True, default=False,
              help="Predict again videos whose OUT/<stem>.csv already exists (skipped otherwise).")
@click.option("--overlay", type=click.Path(path_type=Path), default=None,
              help="Also write each video with its faces' boxes, ids, expression, AU bars (ticked at the model's "
                   "thresholds) and valence-arousal disc drawn, audio kept: "
                   "to OVERLAY itself for one video when it ends in .mp4, else to the folder OVERLAY/<stem>.mp4.")
@click.option("--timelines", is_flag=True, default=False,
              help="Also write OUT/<stem>_face<id>.png: each face's AU probabilities and expression over time.")
@click.option("--low-latency", is_flag=True, default=False,
              help="Causal mode: frame t predicted from frames up to t only (the sequence model over the last "
                   "window of frames); the audio window centred on t still reads context_s/2 ahead (docs/predict.md).")
@click.option("--causal-audio", is_flag=True, default=False,
              help="With --low-latency: delay the audio so that no frame reads audio after its time (scores lower).")
def command(videos: tuple[Path, ...], out_dir: Path, models_dir: Path, visual_onnx: Path | None,
            audio_onnx: Path | None, sequence_onnx: Path | None, crops_root: Path | None,
            params_path: Path | None, device: str, batch_size: int, precision: str, redo: bool,
            overlay: Path | None, timelines: bool, low_latency: bool, causal_audio: bool) -> None:
    """Predict every frame of VIDEOS (files, or folders of .mp4/.avi videos) into OUT/<stem>.csv.

    One row per frame per face. Columns: frame, timestamp (s), face_id, confidence (detector score),
    x, y, w, h (face box, pixels), lm0_x, lm0_y ... lm4_x, lm4_y (left eye, right eye, nose tip, left
    and right mouth corner), the 12 AU probabilities (AU1..AU26), their decisions (AU1_active..AU26_active,
    1/0, at the thresholds sequence.onnx carries, 0.5 without; the log names them), the 7 expression probabilities
    (Neutral..Surprise), expression (the most probable), valence and arousal (the sequence model's, in
    [-1, 1]), face_present and audio_present (1/0), and low_confidence (1 on frames with neither a face
    nor audio, predicted from their neighbours alone). Models exported before valence-arousal (no
    va_pred output) are refused: export them again.
    A frame without any face has one row with the face fields empty. Faces come from --crops (face
    0, no box) or from the offline dlib face detector and five landmarks, every face followed with a
    stable id and aligned to the arcface 112x112 template. Still images (JPEG, PNG...) are refused:
    predict reads videos. A video whose CSV already exists is skipped (CSVs appear only once
    complete, with the overlay and timelines asked for); --redo runs it again. A video that fails is
    reported by name and the others still complete; the exit status is then 1. Progress (frames/s)
    goes to stderr: a bar on a terminal, a plain line every 10 s otherwise.
    """
    setup_logging()
    if causal_audio and not low_latency:
        raise click.UsageError("--causal-audio is an option of --low-latency")
    cfg = load_config(params_path, "predict", PredictConfig) if params_path else PredictConfig()
    models = run_or_exit(
        load_models,
        visual_onnx or models_dir / "onnx" / "visual.onnx",
        audio_onnx or models_dir / "audio" / "tdnn.onnx",
        sequence_onnx or models_dir / "sequence" / "sequence.onnx",
        device, precision=precision,
    )
    click.echo(DEMO_MODELS_NOTE, err=True)
    # a folder stands for its videos; a missing or bad file is left to fail by name while the others run
    videos = tuple(found for video in videos for found in (run_or_exit(videos_in, video) if video.is_dir()
                                                           else [video]))
    display = FrameProgressDisplay([str(video) for video in videos])
    try:
        done, failed = run_or_exit(predict_videos, videos, out_dir, models, crops_root, cfg, batch_size,
                                   skip_complete=not redo, overlay=overlay, timelines=timelines, progress=display,
                                   low_latency=low_latency, causal_audio=causal_audio)
    finally:
        display.close()
    for summary in done:
        if summary.skipped:
            click.echo(f"{summary.video}: {summary.csv} is complete, skipped (--redo to predict again)")
            continue
        click.echo(f"{summary.video}: {summary.frames} frames, {summary.faces} with a face, {summary.audio_frames} "
                   f"with audio, {summary.low_confidence} low-confidence -> {summary.csv}")
    exit_on_failed_videos(failed, len(videos))


if __name__ == "__main__":
    command()
