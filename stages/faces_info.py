"""`mmaffect faces-info PATH`: what a face-identity training set holds, as one JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.data.faces.sets import face_set_info
from stages.common import run_or_exit


@click.command(name="faces-info")
@click.argument("path", type=click.Path(path_type=Path))
def command(path: Path) -> None:
    """Print {"format", "identities", "images"} of the face set at PATH.

    \b
    PATH: an insightface packed set (a directory holding train.rec + train.idx, or the .rec file
          itself), or a folder of <identity>/<image>.jpg aligned faces.
    Exits 1 with a one-line error when PATH is neither, or its records are broken.
    """
    click.echo(json.dumps(run_or_exit(face_set_info, path), sort_keys=True))


if __name__ == "__main__":
    command()
