"""``mmaffect pack-frames``: the face crops of a prepared dataset into one HDF5 frame store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.labels_store import read_all_labels
from pipeline.data.manifest import read_manifest
from stages.common import load_config, params_option, run_or_exit, setup_logging, work_dir_option


@click.command(name="pack-frames")
@click.argument("manifest_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_h5", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@work_dir_option("pack-frames")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading and checking crops.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def command(
    manifest_dir: Path, out_h5: Path, params_path: Path, work_dir: Path, workers: int, progress: bool
) -> None:
    """Read MANIFEST_DIR/manifest.json and the crops it names; write OUT_H5.

    A crop that prepare found (MANIFEST_DIR/labels.h5) and that is gone now fails the run naming
    every such file, or with `on_corrupt: drop` is stored face-absent and counted in `dropped`.

    OUT_H5 holds /subjects/<name>/jpeg (the original JPEG bytes of each frame's crop, empty when
    there is none) and /subjects/<name>/face_present. Every crop is checked as a JPEG; the store is
    built under --work-dir and renamed onto OUT_H5 only when complete. Params: the `pack_frames`
    section of --params. Prints the packing statistics as JSON.
    """
    setup_logging()
    cfg = load_config(params_path, "pack_frames", PackConfig)
    manifest = run_or_exit(read_manifest, manifest_dir / "manifest.json")
    labels = run_or_exit(read_all_labels, manifest_dir / "labels.h5")
    stats = run_or_exit(pack_frames, manifest, out_h5, cfg, work_dir=work_dir, workers=workers, progress=progress,
                        face_present={name: item.face_present for name, item in labels.items()})
    click.echo(json.dumps(stats, indent=2))


if __name__ == "__main__":
    command()
