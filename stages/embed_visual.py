"""``mmaffect embed-visual``: per-frame visual embeddings of every subject into a Zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.embed.visual import EmbedVisualConfig, embed_visual
from stages.common import load_config, params_option, run_or_exit, setup_logging
from stages.embed_options import embed_options, finish, runtime


@click.command(name="embed-visual")
@click.argument("prepared_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("frames_h5", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("visual_onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_zarr", type=click.Path(file_okay=False, path_type=Path))
@params_option
@embed_options("embed-visual")
def command(prepared_dir: Path, frames_h5: Path, visual_onnx: Path, out_zarr: Path, params_path: Path,
            device: str, batch_size: int, workers: int, threads: int, processes: bool,
            scheduler: str | None, work_dir: Path, progress: bool) -> None:
    """Run VISUAL_ONNX over the face crops of FRAMES_H5 for every subject of PREPARED_DIR.

    Reads PREPARED_DIR/manifest.json and labels.h5. Writes OUT_ZARR/<subject>/ with `embedding`
    (N,512) float16, `au_logits`, `expr_logits`, `va_pred`, `face_present`, `au`, `expr` and `va`
    (valence-arousal labels, NaN unlabelled), one dask task per
    subject. The store is built in --work-dir (complete subjects survive an interruption and are
    not recomputed) and moved onto OUT_ZARR when every subject is done. Exits 1 naming the subjects
    that failed. Params: the `embed_visual` section of --params; `precision: int8` runs
    <VISUAL_ONNX stem>.int8.onnx beside VISUAL_ONNX (written by finetune-visual --onnx).
    """
    setup_logging()
    cfg = load_config(params_path, "embed_visual", EmbedVisualConfig)
    inference, cluster = runtime(device, batch_size, workers, threads, processes, scheduler)
    report = run_or_exit(embed_visual, prepared_dir, frames_h5, visual_onnx, out_zarr, cfg, inference, cluster,
                         work_dir=work_dir, progress=progress)
    finish(report)


if __name__ == "__main__":
    command()
