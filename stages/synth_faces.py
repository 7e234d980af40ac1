"""``mmaffect synth-faces OUT``: write the synthetic face-identity set that ``pretrain-face`` trains on."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from pipeline.data.faces.sets import check_same_faces
from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities
from stages.common import load_config, params_option, run_or_exit, setup_logging

log = logging.getLogger("mmaffect.synth_faces")


@click.command(name="synth-faces")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@params_option
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes rendering faces in parallel (the output does not depend on it).")
def command(out: Path, params_path: Path, workers: int) -> None:
    """Write N drawn people x M aligned 112x112 faces to OUT, in both layouts.

    \b
    Reads: the `synth_faces` section of --params (identities, images_per_identity, seed, variation).
    Writes: OUT/rec/{train.rec,train.idx,property} (insightface's packed format),
            OUT/folder/<identity>/<image>.jpg (the same JPEGs), OUT/faces_summary.json.
    The people are others than the synthetic Aff-Wild2-layout subjects. OUT is replaced atomically;
    then both layouts are read back and must hold the same images.
    """
    setup_logging()
    cfg = load_config(params_path, "synth_faces", FaceIdentityConfig)
    start = time.perf_counter()
    summary = run_or_exit(generate_face_identities, out, cfg, workers=workers)
    log.info("generated in %.1f s", time.perf_counter() - start)
    # read both layouts back: each reader sees every image, and the two must agree byte for byte
    images = run_or_exit(check_same_faces, out / "rec", out / "folder")
    log.info("read back both layouts: %d identical images", images)
    click.echo(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    command()
