"""``mmaffect train-sequence``: train the transformer sequence model on the cached embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.device import resolve_device
from pipeline.train.curves import write_curves
from pipeline.train.selection import SelectionConfig
from pipeline.train.sequence import SequenceTrainConfig, train_sequence
from stages.common import (
    curves_option, device_option, load_config, params_option, run_or_exit, setup_logging, work_dir_option,
)

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command(name="train-sequence")
@click.argument("prepared_dir", type=_DIR)
@click.argument("visual_zarr", type=_DIR)
@click.argument("audio_zarr", type=_DIR)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("metrics_json", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@device_option
@work_dir_option("train-sequence")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Windows per batch when scoring the validation videos.")
@curves_option
def command(prepared_dir: Path, visual_zarr: Path, audio_zarr: Path, out_dir: Path, metrics_json: Path,
            params_path: Path, device: str, work_dir: Path, eval_batch_size: int,
            curves_csv: Path | None) -> None:
    """Train on the windows of VISUAL_ZARR and AUDIO_ZARR, split by PREPARED_DIR/manifest.json.

    Writes OUT_DIR/model.pt ({"arch", "state_dict", "modalities", "window", "stride"} of the epoch
    the `selection` section keeps), OUT_DIR/sequence.onnx (input `features` (B, L, D), outputs
    `au_logits` (B, L, 12), `expr_logits` (B, L, 7) and `va_pred` (B, L, 2)) and METRICS_JSON
    ({"validation": {"face_frames", "all_frames"}, "selection", "epochs", "best_epoch"} of that epoch;
    each frame set with the au, expr and, where labelled, va scores); --curves the per-epoch losses and scores.
    Params: the `train_sequence` and `selection` sections of --params.
    """
    setup_logging()
    cfg = load_config(params_path, "train_sequence", SequenceTrainConfig)
    selection = load_config(params_path, "selection", SelectionConfig)
    torch_device = run_or_exit(resolve_device, device)
    result = run_or_exit(
        train_sequence, prepared_dir / "manifest.json", visual_zarr, audio_zarr, out_dir, metrics_json,
        cfg, work_dir=work_dir, device=torch_device, eval_batch_size=eval_batch_size, selection=selection,
    )
    click.echo(json.dumps(result.metrics, indent=2))
    if curves_csv is not None:
        run_or_exit(write_curves, curves_csv, result.history)


if __name__ == "__main__":
    command()
