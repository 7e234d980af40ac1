"""Options and helpers shared by the stage commands (a thin layer over ``pipeline``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from pipeline.config import ConfigError, from_dict, load_section
from pipeline.device import DEVICE_CHOICES

T = TypeVar("T")

params_option = click.option(
    "--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default="params.yaml",
    show_default=True, help="YAML file whose section for this stage configures it.",
)
device_option = click.option(
    "--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
    help="Where torch/onnxruntime compute: auto uses CUDA when present.",
)


def load_config(params_path: Path, section: str, cls: type[T]) -> T:
    """Build the stage's config dataclass from its params section, as a click error on failure."""
    try:
        return from_dict(cls, load_section(params_path, section), where=f"{params_path}:{section}")
    except (ConfigError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc


def setup_logging(verbose: bool = False) -> None:
    """Log INFO (or DEBUG) lines with a timestamp to stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_or_exit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; turn expected input errors into a one-line message and exit status 1."""
    try:
        return fn(*args, **kwargs)
    except KeyError as exc:
        # str(KeyError) wraps the message in quotes; show the message itself
        raise click.ClickException(str(exc.args[0]) if exc.args else repr(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
