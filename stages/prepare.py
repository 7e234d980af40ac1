"""``mmaffect prepare``: an Aff-Wild2 root (and optional BP4D root) into a manifest, labels and a report."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.data.prepare import PrepareConfig, prepare_dataset
from stages.common import load_config, params_option, run_or_exit, setup_logging


@click.command(name="prepare")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--bp4d-root", type=str, default="",
    help="BP4D root (AU_OCC/*.csv, cropped_aligned/) whose sequences are added as AU training data; "
    "empty for none.",
)
@params_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def command(root: Path, out_dir: Path, bp4d_root: str, params_path: Path, progress: bool) -> None:
    """Read ROOT (Aff-Wild2 layout) and write OUT_DIR/{manifest.json,labels.h5,report.json}.

    Reads annotations/{AU_Set,EXPR_Set,VA_Set}/{Train_Set,Validation_Set}/*.txt, the videos anywhere under
    ROOT (.mp4/.avi, matched by stem) and the list of crops in cropped_aligned/. Aligns labels to each
    video's frame count, applies the leakage-free validation protocol and publishes OUT_DIR as a whole.
    Params: the `prepare` section of --params.
    """
    setup_logging()
    cfg = load_config(params_path, "prepare", PrepareConfig)
    # An empty value (the `data.bp4d_root` param of a copy without BP4D) means no BP4D.
    bp4d = Path(bp4d_root) if bp4d_root else None
    if bp4d is not None and not bp4d.is_dir():
        raise click.BadParameter(f"BP4D root {bp4d} is not a directory", param_hint="--bp4d-root")
    manifest = run_or_exit(prepare_dataset, root, out_dir, cfg, bp4d_root=bp4d, progress=progress)
    sources = sum(r.source == "bp4d" for r in manifest.subjects)
    click.echo(
        f"prepared {len(manifest.subjects) - sources} Aff-Wild2 and {sources} BP4D subjects into {out_dir}; "
        f"validation frames excluded by the protocol: AU {manifest.excluded_frames['au']}, "
        f"EXPR {manifest.excluded_frames['expr']}, VA {manifest.excluded_frames['va']}"
    )


if __name__ == "__main__":
    command()
