"""``mmaffect pretrain-face``: train the visual backbone as a face recogniser (CosFace/ArcFace)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.device import resolve_device
from pipeline.fsio import write_json
from pipeline.train import ddp
from pipeline.train.curves import write_curves
from pipeline.train.pretrain import PretrainConfig, train_pretrain, verification_headline
from stages.common import (
    curves_option, device_option, headline_option, load_config, params_option, run_or_exit, setup_logging,
    work_dir_option,
)
from stages.loader_options import loader_config, loader_options


@click.command(name="pretrain-face")
@click.argument("faces", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("metrics_json", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@device_option
@loader_options("images")
@work_dir_option("pretrain-face")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, show_default=True,
              help="Also checkpoint every N batches within an epoch (0 = at epoch ends only).")
@curves_option
@headline_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def command(
    faces: Path, out_dir: Path, metrics_json: Path, params_path: Path, device: str, workers: int,
    pin_memory: bool, prefetch_factor: int | None, persistent_workers: bool, work_dir: Path, checkpoint_every: int,
    curves_csv: Path | None, headline_json: Path | None, progress: bool,
) -> None:
    """Train on the face-identity set FACES; publish the backbone of the best verification epoch.

    \b
    FACES: insightface's packed set (a directory with train.rec + train.idx, or the .rec file), or a
           folder of <identity>/<image>.jpg aligned 112x112 faces (see `mmaffect faces-info`).
    Writes OUT_DIR/backbone.pth (a plain state dict in arcface_torch key format, for
    finetune-visual --pretrained), OUT_DIR/backbone.json (backbone, width_mult, input contract) and
    METRICS_JSON (held-out pair accuracy and TAR@FAR of the best epoch and of the initial weights,
    per-epoch history); --curves the per-epoch loss and verification scores, --headline the best
    epoch's verification accuracy and TAR@FAR. Params: the `pretrain_face` section of --params.
    A trained backbone whose held-out pair accuracy does not beat the starting weights' by
    `pretrain_face.min_gain` is refused: exit status 1, nothing written, the run's metrics kept in
    --work-dir's refused.json.
    Multi-GPU: launch with `torchrun --nproc_per_node N -m stages.pretrain_face ...`; rank 0 writes
    the files.
    """
    setup_logging()
    cfg = load_config(params_path, "pretrain_face", PretrainConfig)
    loader = loader_config(workers, pin_memory, prefetch_factor, persistent_workers)
    run_or_exit(resolve_device, device)
    with ddp.distributed(device) as (ctx, torch_device):
        result = run_or_exit(
            train_pretrain, faces, out_dir, metrics_json, work_dir, cfg, device=torch_device, loader=loader,
            dist=ctx, checkpoint_every=checkpoint_every, progress=progress,
        )
    if ctx.is_main:
        summary = {k: result.metrics[k] for k in ("verification", "initial", "best_epoch", "epochs")}
        click.echo(json.dumps(summary, indent=2))
        if curves_csv is not None:
            run_or_exit(write_curves, curves_csv, result.history)
        if headline_json is not None:
            run_or_exit(write_json, headline_json, verification_headline(result.metrics))


if __name__ == "__main__":
    command()
