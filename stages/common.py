"""Options and helpers shared by the stage commands (a thin layer over ``pipeline``)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from pipeline.config import ConfigError, from_section, load_section
from pipeline.device import DEVICE_CHOICES
from pipeline.fsio import DiskFullError, ForeignOutputError, WorkDirBusy, disk_full_path, work_dir_lock

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

params_option = click.option(
    "--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default="params.yaml",
    show_default=True, help="YAML file whose section for this stage configures it.",
)
device_option = click.option(
    "--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
    help="Where torch/onnxruntime compute: auto uses CUDA when present.",
)


curves_option = click.option(
    "--curves", "curves_csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write each epoch's training loss and validation scores here (CSV; dvc.yaml plots it).",
)
headline_option = click.option(
    "--headline", "headline_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the few scores a run is compared by here (dvc.yaml declares it as the metrics).",
)


def work_dir_option(stage: str) -> Callable[[F], F]:
    """Add ``--work-dir`` (default ``cache/work/<stage>``) and ``--wait``, and run the command
    holding an exclusive lock on the work directory.

    A second run on the same work directory exits 1 with "another run holds <dir> (pid N)", or with
    ``--wait`` waits until the first finishes. Under ``torchrun`` only rank 0 takes the lock: the
    ranks of one run share the directory.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, wait: bool, **kwargs: Any) -> Any:
            if os.environ.get("RANK", "0") != "0":
                return fn(*args, **kwargs)
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(work_dir_lock(kwargs["work_dir"], wait=wait))
                except WorkDirBusy as exc:
                    raise click.ClickException(str(exc)) from exc
                return fn(*args, **kwargs)

        locked = click.option(
            "--wait", is_flag=True, help="If another run holds --work-dir, wait for it instead of exiting."
        )(locked)
        locked = click.option(
            "--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(f"cache/work/{stage}"),
            show_default=True, help="This stage's resumable state; one run at a time holds it (see --wait).",
        )(locked)
        return locked  # type: ignore[return-value]

    return decorate


def load_config(params_path: Path, section: str, cls: type[T]) -> T:
    """Build the stage's config dataclass from its params section, as a click error on failure."""
    try:
        return from_section(cls, load_section(params_path, section), where=f"{params_path}:{section}")
    except (ConfigError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc


# What a stage creates is kept from other users of the machine: face crops, identity embeddings and
# per-frame expressions are biometric data (docs/privacy.md). The caller's umask may only narrow it.
PRIVATE_UMASK = 0o077


def keep_outputs_private() -> int:
    """Add :data:`PRIVATE_UMASK` to this process's umask (inherited by its workers); return the old one."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def setup_logging(verbose: bool = False) -> None:
    """Log INFO (or DEBUG) lines with a timestamp to stderr, and keep the stage's outputs private.

    Every stage calls this first, so it is where the process's umask is narrowed
    (:func:`keep_outputs_private`): directories 0o700 and files 0o600 unless the caller's umask is
    narrower still.
    """
    keep_outputs_private()
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
    except (ValueError, FileNotFoundError, ForeignOutputError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (OSError, RuntimeError) as exc:
        raise_if_disk_full(exc)
        raise


def exit_on_failed_videos(failed: dict[str, str], total: int) -> None:
    """Print each failed video's message and exit with status 1 when any of ``total`` videos failed."""
    for message in failed.values():
        click.echo(f"FAILED: {message}", err=True)
    if failed:
        click.echo(f"{len(failed)} of {total} videos failed", err=True)
        raise SystemExit(1)


def raise_if_disk_full(exc: BaseException) -> None:
    """Turn a full-disk write error (see :func:`pipeline.fsio.disk_full_path`) into one line naming
    the path being written; return for any other error, which the caller re-raises."""
    path = disk_full_path(exc)
    if path is not None:
        raise click.ClickException(str(DiskFullError(path or "a stage output"))) from exc
