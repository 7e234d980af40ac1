"""Wall time of a full ``dvc repro`` of the pipeline, stage by stage; writes one JSON record.

Runs ``dvc repro --force --single-item STAGE`` for every stage of ``dvc.yaml`` in file order (the
pipeline's order), so each stage recomputes its outputs from its inputs and is timed on its own.
Meant for an otherwise idle machine: the record keeps the load average before and after, and marks
itself ``busy`` when other processes were using the cores.

    python -m benchmarks.repro_time                  # from the repository root, after `make repro` once
    python -m benchmarks.repro_time --stages finetune-visual,evaluate
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import yaml

from tooling.bench import harness


def pipeline_stages(dvc_yaml: Path) -> list[str]:
    """The stage names of ``dvc_yaml`` in file order."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def time_stage(stage: str, dvc: str) -> float:
    """Seconds of ``dvc repro --force --single-item STAGE``; a failing stage stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run([dvc, "repro", "--force", "--single-item", stage], check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dvc repro of stage {stage!r} failed with exit status {result.returncode}")
    return seconds


def main() -> None:
    parser = harness.parser("repro_time", __doc__)
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--stages", help="comma list of stages to time (default: all, in dvc.yaml order)")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable")
    args = parser.parse_args()
    bench = harness.start("repro_time")
    stages = args.stages.split(",") if args.stages else pipeline_stages(args.dvc_yaml)
    timed = [{"stage": stage, "seconds": round(time_stage(stage, args.dvc), 1)} for stage in stages]
    results = {
        "stages": timed,
        "total_seconds": round(sum(t["seconds"] for t in timed), 1),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    bench.publish(results, threads, args.out)


if __name__ == "__main__":
    main()
