"""``mmaffect report``: render the result blocks of README.md and docs/*.md from committed JSON files."""

from __future__ import annotations

from pathlib import Path

import click

from tooling.report.catalog import RENDERERS
from tooling.report.run import doc_files, render_docs


@click.command(name="report")
@click.option("--root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("."),
              show_default=True, help="Repository root holding README.md, docs/, metrics/ and benchmarks/results/.")
@click.option("--check", is_flag=True,
              help="Change nothing; exit 1 naming every block whose text differs from its source file.")
def command(root: Path, check: bool) -> None:
    """Rewrite every <!-- report:NAME --> block of README.md and docs/*.md from its JSON file.

    Block names and their source files are listed in tooling/report/catalog.py. Sources are the
    stages' metrics/*.json and the benchmark records in benchmarks/results/.
    """
    try:
        stale = render_docs(root, doc_files(root), RENDERERS, check=check)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    for block in stale:
        click.echo(f"{'stale' if check else 'rendered'}: {block}", err=check)
    if check and stale:
        raise SystemExit(1)
    if not stale:
        click.echo("every report block matches its source file")


if __name__ == "__main__":
    command()
