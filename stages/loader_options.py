"""Click options of how a trainer is fed (``pretrain-face``, ``finetune-visual``; not a stage itself).

Workers, pinned memory, prefetching and persistent workers change how fast batches arrive, never
what is computed: they are options rather than params, so changing one reruns no DVC stage.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from pipeline.config import ConfigError
from pipeline.train.loader import LoaderConfig

F = Callable[..., Any]


def loader_options(what: str) -> Callable[[F], F]:
    """Add --workers, --pin-memory/--no-pin-memory, --prefetch-factor, --persistent-workers; ``what``
    names what the workers decode (``frames``, ``images``) in the help."""
    options = [
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help=f"DataLoader worker processes decoding {what} (0 = in the training process)."),
        click.option("--pin-memory/--no-pin-memory", default=True, show_default=True,
                     help="Page-locked host batches when the device is CUDA (no effect on the CPU)."),
        click.option("--prefetch-factor", type=click.IntRange(min=1), default=None,
                     help="Batches each worker loads ahead (needs --workers >= 1) [default: torch's 2]."),
        click.option("--persistent-workers/--no-persistent-workers", default=False, show_default=True,
                     help="Keep the workers between epochs (needs --workers >= 1)."),
    ]

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def loader_config(workers: int, pin_memory: bool, prefetch_factor: int | None,
                  persistent_workers: bool) -> LoaderConfig:
    """The :class:`LoaderConfig` of the options; a bad combination is a usage error naming the option."""
    try:
        return LoaderConfig(workers, pin_memory, prefetch_factor, persistent_workers)
    except ConfigError as exc:
        option = f"--{exc.key.replace('_', '-')}" if exc.key else "loader options"
        raise click.UsageError(f"{option}: {exc.args[0]}") from None
