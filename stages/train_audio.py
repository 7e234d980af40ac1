"""``mmaffect train-audio``: train the TDNN audio model and the A+V fusion head, the visual model frozen."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.device import resolve_device
from pipeline.train.audio import AudioTrainConfig, train_audio
from pipeline.train.curves import write_curves
from pipeline.train.selection import SelectionConfig
from stages.common import (
    curves_option, device_option, load_config, params_option, run_or_exit, setup_logging, work_dir_option,
)

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command(name="train-audio")
@click.argument("prepared_dir", type=_DIR)
@click.argument("visual_zarr", type=_DIR)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("metrics_json", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@device_option
@work_dir_option("train-audio")
@curves_option
def command(prepared_dir: Path, visual_zarr: Path, out_dir: Path, metrics_json: Path, params_path: Path,
            device: str, work_dir: Path, curves_csv: Path | None) -> None:
    """Train on the soundtracks of the videos in PREPARED_DIR/manifest.json and the frozen visual
    model's embeddings in VISUAL_ZARR.

    Writes OUT_DIR/model.pt ({"tdnn_arch", "tdnn", "fusion_arch", "fusion", "audio_config"} of the
    epoch the `selection` section keeps), OUT_DIR/tdnn.onnx (input `mel` (B, 64, C), output
    `embedding` (B, 512), the audio config in its metadata), OUT_DIR/tdnn.int8.onnx (its int8
    quantization, calibrated on `int8_windows` windows of the training videos, recorded in its
    metadata; `embed-audio` runs it at `precision: int8`) and METRICS_JSON ({"validation",
    "visual_only", "selection", "epochs", "best_epoch"}: the fused model next to the visual model's
    own logits on the same validation frames, on face_frames and all_frames); --curves the per-epoch
    losses and scores. Params: the `train_audio` and `selection` sections.
    """
    setup_logging()
    cfg = load_config(params_path, "train_audio", AudioTrainConfig)
    selection = load_config(params_path, "selection", SelectionConfig)
    torch_device = run_or_exit(resolve_device, device)
    result = run_or_exit(
        train_audio, prepared_dir, visual_zarr, out_dir, metrics_json, cfg, work_dir=work_dir, device=torch_device,
        selection=selection,
    )
    click.echo(json.dumps(result.metrics, indent=2))
    if curves_csv is not None:
        run_or_exit(write_curves, curves_csv, result.history)


if __name__ == "__main__":
    command()
