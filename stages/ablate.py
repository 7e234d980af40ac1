"""``mmaffect ablate``: run a grid of train-sequence params as DVC experiments and tabulate them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click
import yaml

from pipeline.ablation import (
    EXAMPLE_GRID, expand_grid, exp_run_command, experiment_name, format_csv, format_markdown, load_grid,
    rows_from_exp_show, run_grid,
)
from pipeline.fsio import atomic_path
from stages.common import run_or_exit


def _values(text: str | None) -> list[Any] | None:
    """``"10,30"`` -> ``[10, 30]`` (each item parsed as YAML, like ``dvc exp run -S``)."""
    return None if text is None else [yaml.safe_load(item) for item in text.split(",") if item.strip()]


def _run(argv: list[str]) -> None:
    click.echo("$ " + " ".join(argv), err=True)
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(argv[:5])} failed with exit status {result.returncode}")


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _exp_show_rows(params: list[str], metrics_path: str, variant: str | None) -> list[dict[str, Any]]:
    listing = subprocess.run(["dvc", "exp", "show", "--json"], check=False, capture_output=True, text=True)
    if listing.returncode != 0:
        raise click.ClickException(f"dvc exp show failed: {listing.stderr.strip()}")
    return run_or_exit(rows_from_exp_show, json.loads(listing.stdout), params, metrics_path, variant)


@click.command(name="ablate")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML mapping of train_sequence param -> list of values (instead of the options below).")
@click.option("--modalities", help="Comma list, e.g. visual,audio,both.")
@click.option("--window", help="Comma list of window lengths, e.g. 10,30.")
@click.option("--layers", help="Comma list of encoder layer counts, e.g. 1,2.")
@click.option("--dry-run", is_flag=True, help="Print the dvc commands instead of running them.")
@click.option("--show", is_flag=True, help="Only tabulate the experiments already in `dvc exp show --json`.")
@click.option("--temp", is_flag=True, help="Run each experiment outside the workspace (dvc exp run --temp).")
@click.option("--metrics", "metrics_path", default="metrics/evaluate.json", show_default=True,
              help="Metrics file read for each experiment.")
@click.option("--variant", default="sequence", show_default=True,
              help="Key of the metrics file holding the scores ('' for a file with au/expr at the top).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table as Markdown here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write it as CSV here.")
def command(grid_path: Path | None, modalities: str | None, window: str | None, layers: str | None, dry_run: bool,
            show: bool, temp: bool, metrics_path: str, variant: str, markdown_path: Path | None,
            csv_path: Path | None) -> None:
    """Run `dvc exp run -S train_sequence.<param>=<value> ...` for every point of the grid, then print a
    results table (best mean of the AU and EXPR scores first).

    The grid is --grid, or the product of --modalities, --window and --layers, or by default
    modalities visual,audio,both x window 10,30 x layers 1,2. Only train-sequence and evaluate rerun
    per experiment: the embeddings come from the DVC cache. Run it in the repository root.
    """
    options = {"modalities": _values(modalities), "window": _values(window), "layers": _values(layers)}
    axes = {name: values for name, values in options.items() if values is not None}
    if grid_path is not None and axes:
        raise click.UsageError("give either --grid or --modalities/--window/--layers, not both")
    axes = run_or_exit(load_grid, grid_path) if grid_path is not None else (axes or EXAMPLE_GRID)
    points = run_or_exit(expand_grid, axes)
    if dry_run:
        for point in points:
            click.echo(" ".join(exp_run_command(point, experiment_name(point), temp=temp)))
        return
    if show:
        rows = _exp_show_rows(list(axes), metrics_path, variant or None)
    elif temp:
        # --temp results stay out of the workspace: run everything, then read them back from DVC.
        for point in points:
            _run(exp_run_command(point, experiment_name(point), temp=True))
        names = {experiment_name(point) for point in points}
        rows = [row for row in _exp_show_rows(list(axes), metrics_path, variant or None) if row["experiment"] in names]
    else:
        rows = run_grid(points, _run, lambda: json.loads(Path(metrics_path).read_text()), variant or None)
    click.echo(format_markdown(rows), nl=False)
    if markdown_path is not None:
        _write(markdown_path, format_markdown(rows))
    if csv_path is not None:
        _write(csv_path, format_csv(rows))


if __name__ == "__main__":
    command()
