"""The record a benchmark writes beside its figures: command, date, CPU, threads and machine load.

A figure measured while other processes shared the cores is not an idle-machine figure; the load
average before and after the measurement, saved with it, says which one it is.

Example:
    >>> record = benchmark_record("face_tracking", {"fps": 3.4}, ["-m", "benchmarks.face_tracking"], threads=1)
    >>> sorted(record["machine"])
    ['cpu_count', 'cpu_features', 'cpu_model', 'load_average_after', 'load_average_before', 'threads']
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from pipeline.fsio import write_json

# Where the benchmark scripts publish their records (relative to the repository root).
RESULTS_DIR = Path("benchmarks/results")
# A 1-minute load average above this share of the cores marks the figures as measured on a busy machine.
BUSY_LOAD_PER_CORE = 0.5
# The SIMD features that decide how fast float32, bf16 and int8 kernels run: a model name such as
# "AMD EPYC" covers CPUs from AVX2-only to AVX-512 with VNNI, whose int8 speed-ups differ.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_int8")


def is_busy(load_before: float, load_after: float, threads: int, cores: int) -> bool:
    """Whether other processes shared the cores: the load before the run, or the load after it beyond
    the benchmark's own ``threads`` (which it raised itself), exceeds :data:`BUSY_LOAD_PER_CORE` of the cores."""
    limit = BUSY_LOAD_PER_CORE * cores
    return load_before > limit or load_after - threads > limit


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_features() -> list[str]:
    """Which of :data:`SIMD_FLAGS` this CPU has (from /proc/cpuinfo; empty where it cannot be read)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SIMD_FLAGS if flag in present]
    return []


def machine_identity() -> dict[str, Any]:
    """What names this machine in a record: the CPU's model, its SIMD features and its core count."""
    return {"cpu_model": cpu_model(), "cpu_features": cpu_features(), "cpu_count": os.cpu_count() or 1}


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded to 2 decimals."""
    return [round(v, 2) for v in os.getloadavg()]


def benchmark_record(
    name: str, results: dict[str, Any], argv: Sequence[str], threads: int,
    load_before: Sequence[float] | None = None, started: datetime | None = None,
) -> dict[str, Any]:
    """Wrap a benchmark's ``results`` with the command that produced them and the machine's state."""
    started = started or datetime.now(timezone.utc)
    before = list(load_before) if load_before is not None else load_average()
    after = load_average()
    identity = machine_identity()
    return {
        "benchmark": name,
        "command": shlex.join([*_thread_env(), "python", *argv]),
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            **identity,
            "threads": int(threads),
            "load_average_before": before,
            "load_average_after": after,
        },
        "busy": is_busy(before[0], after[0], int(threads), identity["cpu_count"]),
        "python": sys.version.split()[0],
        "results": results,
    }


def _thread_env() -> list[str]:
    # The thread count of a run often comes from the environment; the command must say so to be rerun.
    return [f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS",) if name in os.environ]


def write_record(record: dict[str, Any], out: str | Path) -> Path:
    """Publish ``record`` as JSON at ``out`` (atomically) and return the path."""
    out = Path(out)
    write_json(out, record)
    return out
