"""`mmaffect synth OUT`: write the synthetic Aff-Wild2-layout dataset (plus its small BP4D part)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import click

from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.data.synth.config import PRESETS
from stages.common import load_config, params_option, run_or_exit, setup_logging

log = logging.getLogger("mmaffect.synth")


def build_config(preset: str | None, seed: int | None, params_path: Path) -> SynthConfig:
    """The config a command line asks for: a named preset, or the ``synth`` section of the params file."""
    if preset is not None:
        return SynthConfig.from_preset(preset, seed=0 if seed is None else seed)
    cfg = load_config(params_path, "synth", SynthConfig)
    return cfg if seed is None else dataclasses.replace(cfg, seed=seed)


@click.command(name="synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Use this preset and ignore the params file.")
@click.option("--seed", type=int, default=None, help="Random seed (overrides the preset's or params' seed).")
@params_option
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes generating videos in parallel (the output does not depend on it).")
@click.option("-v", "--verbose", is_flag=True, help="Log every video.")
def command(out: Path, preset: str | None, seed: int | None, params_path: Path, workers: int, verbose: bool) -> None:
    """Write a synthetic dataset in the Aff-Wild2 layout to OUT.

    \b
    Reads: the `synth` section of --params (a preset name plus overrides), unless --preset is given.
    Writes: OUT/annotations/{AU_Set,EXPR_Set}/{Train_Set,Validation_Set}/*.txt,
            OUT/cropped_aligned/<name>/*.jpg, OUT/videos/batch*/<video>.{mp4,avi},
            OUT/BP4D/{AU_OCC/*.csv,cropped_aligned/}, OUT/synth_summary.json.
    OUT is replaced atomically when generation has finished.
    """
    setup_logging(verbose)
    if not verbose:
        logging.getLogger("pipeline.data.synth").setLevel(logging.WARNING)
    cfg = build_config(preset, seed, params_path)
    start = time.perf_counter()
    summary = run_or_exit(generate_dataset, out, cfg, workers=workers)
    log.info("generated in %.1f s", time.perf_counter() - start)
    click.echo(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    command()
