"""`mmaffect backbone-of MODEL OUT_DIR`: a fine-tuned visual model's backbone as a file finetune-visual starts from."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.model_files.backbone_of import publish_backbone_of
from stages.common import run_or_exit


@click.command(name="backbone-of")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def command(model: Path, out_dir: Path) -> None:
    """Write the backbone of MODEL (a finetune-visual model.pt) as OUT_DIR/backbone.pth and backbone.json.

    \b
    The two files are those pretrain-face publishes, so `finetune-visual --pretrained OUT_DIR/backbone.pth`
    (or `dvc exp run -S data.pretrained_backbone=OUT_DIR/backbone.pth`) starts from them: e.g. a
    positive control starting from a model fine-tuned on another synthetic draw. OUT_DIR is replaced
    as a whole (it must be empty or an earlier output). Exits 1 with one line when MODEL is missing
    or not a visual model.
    """
    path = run_or_exit(publish_backbone_of, model, out_dir)
    click.echo(f"wrote {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    command()
