"""Click options shared by the ``embed-visual`` and ``embed-audio`` stages (not a stage itself)."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import click

from pipeline.embed.runner import ClusterOptions, InferenceOptions, RunReport
from stages.common import device_option, work_dir_option

F = Callable[..., Any]


def embed_options(stage: str) -> Callable[[F], F]:
    """Add --device, --batch-size, --workers, --threads, --processes, --scheduler, --work-dir (locked,
    with --wait), --progress."""
    options = [
        device_option,
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Frames per model call."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Workers of the local dask cluster."),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Tasks each worker runs at once (each uses one model thread); workers x threads <= cores."),
        click.option("--processes/--no-processes", default=True, show_default=True,
                     help="Local workers as processes, or as threads of this process."),
        click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="Use the running dask cluster at ADDRESS (e.g. tls://host:8786) instead of a local one. "
                          "Whoever reaches that scheduler can run code on its workers, and the scheduler can run "
                          "code in this process (dask sends pickled tasks and results): use TLS or a private "
                          "network (docs/cluster.md). A local cluster listens on 127.0.0.1 only, over TLS."),
        _cores_checked_first,
        work_dir_option(stage),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."),
    ]

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _cores_checked_first(fn: F) -> F:
    """Check --workers x --threads against the cores before the work directory is locked (and made)."""

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        options = ClusterOptions(n_workers=kwargs["workers"], threads_per_worker=kwargs["threads"],
                                 scheduler=kwargs["scheduler"])
        try:
            options.check_cores()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        return fn(*args, **kwargs)

    return checked  # type: ignore[return-value]


def runtime(device: str, batch_size: int, workers: int, threads: int, processes: bool,
            scheduler: str | None) -> tuple[InferenceOptions, ClusterOptions]:
    """The inference and cluster options of the command line."""
    return (InferenceOptions(device=device, batch_size=batch_size),
            ClusterOptions(n_workers=workers, threads_per_worker=threads, processes=processes, scheduler=scheduler))


def finish(report: RunReport) -> None:
    """Print the run's figures as JSON; exit non-zero naming every failed key."""
    if not report.ok:
        raise click.ClickException(report.summary())
    frames = sum(r["frames"] for r in report.results.values())
    seconds = sum(r["seconds"] for r in report.results.values())
    click.echo(json.dumps({
        "store": report.store, "computed": len(report.computed), "skipped": len(report.skipped),
        "frames": frames, "task_seconds": round(seconds, 3), "wall_seconds": round(report.seconds, 3),
    }, indent=2))
