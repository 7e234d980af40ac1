"""``mmaffect finetune-visual``: fine-tune the multi-task IResNet on AU, expression and valence-arousal frames."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.data.manifest import read_manifest
from pipeline.device import resolve_device
from pipeline.model_files.visual import ExportConfig
from pipeline.train import ddp
from pipeline.train.curves import write_curves
from pipeline.train.selection import SelectionConfig
from pipeline.train.visual import VisualTrainConfig, train_visual
from stages.common import (
    curves_option, device_option, load_config, params_option, run_or_exit, setup_logging, work_dir_option,
)
from stages.loader_options import loader_config, loader_options


@click.command(name="finetune-visual")
@click.argument("prepared_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("frames_h5", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("metrics_json", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@device_option
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="arcface_torch backbone.pth the backbone starts from (pretrain-face writes one); "
                   "needed when finetune_visual.backbone_init is pretrained, unread when it is random.")
@loader_options("frames")
@work_dir_option("finetune-visual")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=200, show_default=True,
              help="Also checkpoint every N batches within an epoch (0 = at epoch ends only).")
@curves_option
@click.option("--onnx", "out_onnx", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="OUT_ONNX",
              help="Also export the kept model to OUT_ONNX (cache/onnx/visual.onnx), parity-checked, and its "
                   "int8 copy beside it, calibrated on face crops of FRAMES_H5 (the export_onnx section).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def command(
    prepared_dir: Path, frames_h5: Path, out_dir: Path, metrics_json: Path, params_path: Path, device: str,
    pretrained: Path | None, workers: int, pin_memory: bool, prefetch_factor: int | None, persistent_workers: bool,
    work_dir: Path, checkpoint_every: int, curves_csv: Path | None, out_onnx: Path | None, progress: bool,
) -> None:
    """Train on PREPARED_DIR/{manifest.json,labels.h5} and the crops in FRAMES_H5.

    Writes OUT_DIR/model.pt ({"arch", "state_dict"} of the epoch the `selection` section keeps:
    by default the best mean of the ABAW AU, EXPR and VA scores on held-out training videos) and
    METRICS_JSON (that epoch's validation report on face_frames and all_frames, the trivial
    baselines, the selection record, epochs, best_epoch); --curves the per-epoch losses and scores.
    With --onnx, also OUT_ONNX and its int8 copy (<OUT_ONNX stem>.int8.onnx), as `export-onnx` with
    --int8-calibration FRAMES_H5 writes them from model.pt; a rerun for a changed `export_onnx` param
    resumes the finished training from --work-dir and only exports again.
    Params: the `finetune_visual` and `selection` sections of --params (and `export_onnx` with
    --onnx); with `finetune_visual.backbone_init: pretrained` the backbone starts from --pretrained.
    Multi-GPU: launch with `torchrun --nproc_per_node N -m stages.finetune_visual ...`; rank 0 writes
    the files.
    """
    setup_logging()
    cfg = load_config(params_path, "finetune_visual", VisualTrainConfig)
    selection = load_config(params_path, "selection", SelectionConfig)
    loader = loader_config(workers, pin_memory, prefetch_factor, persistent_workers)
    export = load_config(params_path, "export_onnx", ExportConfig) if out_onnx is not None else ExportConfig()
    manifest = run_or_exit(read_manifest, prepared_dir / "manifest.json")
    run_or_exit(resolve_device, device)
    with ddp.distributed(device) as (ctx, torch_device):
        result = run_or_exit(
            train_visual, manifest, prepared_dir / "labels.h5", frames_h5, out_dir / "model.pt", metrics_json,
            work_dir, cfg, device=torch_device, loader=loader, dist=ctx,
            checkpoint_every=checkpoint_every, progress=progress, selection=selection, pretrained=pretrained,
            onnx_path=out_onnx, export=export,
        )
    if ctx.is_main:
        summary = {k: result.metrics[k] for k in ("validation", "best_epoch", "epochs")}
        summary["selection"] = result.metrics["selection"]["mode"]
        click.echo(json.dumps(summary, indent=2))
        if curves_csv is not None:
            run_or_exit(write_curves, curves_csv, result.history)


if __name__ == "__main__":
    command()
