"""The harness of the benchmark scripts: one parser convention, one run record, one way to publish it.

A script builds its options on :func:`parser` (its docstring as the description, ``--out`` defaulting
to ``benchmarks/results/NAME.json``), calls :func:`start` once the options are parsed (the load
average and date before any work), measures, then :meth:`Run.publish` writes the record atomically
and prints it. The record's ``command`` is the one that reruns the script from the repository root.

Example:
    >>> args = parser("face_tracking", "Faces tracked per second.").parse_args([])
    >>> str(args.out)
    'benchmarks/results/face_tracking.json'
    >>> run = start("face_tracking", ["--frames", "60"])
    >>> run.record({"fps": 3.4}, threads=1)["command"].endswith("python -m benchmarks.face_tracking --frames 60")
    True
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from tooling.bench.record import RESULTS_DIR, benchmark_record, load_average, write_record

# The package the scripts are run from (``python -m benchmarks.NAME``).
PACKAGE = "benchmarks"


def parser(name: str, doc: str | None, *, full_doc: bool = False, out: bool = True) -> argparse.ArgumentParser:
    """The option parser a benchmark starts from: ``doc``'s first line as its description (all of it,
    unformatted, with ``full_doc``) and, with ``out``, ``--out`` defaulting to the record's usual path."""
    doc = doc or name
    if full_doc:
        made = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.{name}", description=doc,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        made = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.{name}", description=doc.splitlines()[0])
    if out:
        made.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json",
                          help="where the JSON record is written")
    return made


def env_threads() -> int:
    """The thread count a run gets from ``OMP_NUM_THREADS``, else the machine's core count."""
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))


@dataclass(frozen=True)
class Run:
    """One measurement of benchmark ``name``: its options and the machine's state when it began."""

    name: str
    argv: tuple[str, ...]
    load_before: tuple[float, ...]
    started: datetime

    def command_args(self) -> list[str]:
        """The arguments after ``python`` that rerun this measurement from the repository root."""
        return ["-m", f"{PACKAGE}.{self.name}", *self.argv]

    def record(self, results: dict[str, Any], threads: int) -> dict[str, Any]:
        """``results`` wrapped with the command, the date it began, the machine and its load."""
        return benchmark_record(self.name, results, self.command_args(), threads, self.load_before, self.started)

    def publish(self, results: dict[str, Any], threads: int, out: str | Path, echo: bool = True) -> dict[str, Any]:
        """Write the record of ``results`` to ``out`` (atomically), print it unless ``echo`` is false, return it."""
        return emit(self.record(results, threads), out, echo)


def emit(record: dict[str, Any], out: str | Path, echo: bool = True) -> dict[str, Any]:
    """Write ``record`` to ``out`` (atomically), print it as indented JSON unless ``echo`` is false, return it."""
    write_record(record, out)
    if echo:
        print(json.dumps(record, indent=2))
    return record


def start(name: str, argv: Sequence[str] | None = None) -> Run:
    """Begin a measurement of benchmark ``name`` run with ``argv`` (default: this process's options)."""
    options = tuple(sys.argv[1:] if argv is None else argv)
    return Run(name, options, tuple(load_average()), datetime.now(timezone.utc))
