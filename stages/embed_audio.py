"""``mmaffect embed-audio``: per-frame audio embeddings of every video into a Zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.embed.audio import EmbedAudioConfig, embed_audio
from stages.common import load_config, params_option, run_or_exit, setup_logging
from stages.embed_options import embed_options, finish, runtime


@click.command(name="embed-audio")
@click.argument("prepared_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("audio_model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_zarr", type=click.Path(file_okay=False, path_type=Path))
@params_option
@embed_options("embed-audio")
def command(prepared_dir: Path, audio_model_dir: Path, out_zarr: Path, params_path: Path,
            device: str, batch_size: int, workers: int, threads: int, processes: bool,
            scheduler: str | None, work_dir: Path, progress: bool) -> None:
    """Run the TDNN of AUDIO_MODEL_DIR over the soundtrack of every video of PREPARED_DIR.

    Reads PREPARED_DIR/manifest.json, the videos it names, and AUDIO_MODEL_DIR/tdnn.onnx (backend
    onnx) or model.pt (backend torch). Writes OUT_ZARR/<video>/ with `embedding` (N,512) float16
    (zeros where no audio covers the frame) and `audio_present`, one dask task per video. The store
    is built in --work-dir (complete videos survive an interruption and are not recomputed) and
    moved onto OUT_ZARR when every video is done. Exits 1 naming the videos that failed. Params:
    the `embed_audio` section of --params; `precision: int8` runs AUDIO_MODEL_DIR/tdnn.int8.onnx.
    """
    setup_logging()
    cfg = load_config(params_path, "embed_audio", EmbedAudioConfig)
    inference, cluster = runtime(device, batch_size, workers, threads, processes, scheduler)
    report = run_or_exit(embed_audio, prepared_dir, audio_model_dir, out_zarr, cfg, inference, cluster,
                         work_dir=work_dir, progress=progress)
    finish(report)


if __name__ == "__main__":
    command()
