"""How far this machine's demo scores land from the committed ones; writes one JSON record.

torch does not promise bit-identical training across CPU models, so a ``make repro`` of an unchanged
commit on another CPU writes other scores than the committed ``metrics/evaluate.json``. Run after
``make repro`` in a clean clone on the machine to compare: the record keeps both score sets (the
run's ``metrics/evaluate.json`` and the one its commit holds), the commit, and this CPU's model and
SIMD features.

    python -m benchmarks.cross_cpu --clone . --reference-machine "AMD EPYC [avx2, fma] (Zen 3)"
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tooling.bench import harness
from tooling.bench.record import machine_identity

EVALUATE = "metrics/evaluate.json"


def _git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True, text=True).stdout


def cross_cpu_record(clone: Path, reference_machine: str, command: str) -> dict[str, Any]:
    """The record of ``clone``'s reproduced scores beside those its commit holds (run on this machine)."""
    if _git(clone, "status", "--porcelain", "--untracked-files=no", "--", "pipeline", "stages", "params.yaml",
            "dvc.yaml"):
        raise SystemExit(f"{clone}: the code or params differ from the commit; the comparison needs a clean clone")
    reproduced = json.loads((clone / EVALUATE).read_text())
    committed = json.loads(_git(clone, "show", f"HEAD:{EVALUATE}"))
    if reproduced == committed:
        print(f"{clone / EVALUATE} equals the committed file: this machine reproduces it byte for byte",
              file=sys.stderr)
    return {
        "benchmark": "cross_cpu",
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git(clone, "rev-parse", "HEAD").strip(),
        "machine": machine_identity(),
        "reference_machine": reference_machine,
        "results": {"committed": committed, "reproduced": reproduced},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Write and print the record."""
    parser = harness.parser("cross_cpu", __doc__)
    parser.add_argument("--clone", type=Path, default=Path("."), help="a clone after `make repro` on this machine")
    parser.add_argument("--reference-machine", required=True,
                        help="the CPU that wrote the committed metrics (model and SIMD features)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", *harness.start("cross_cpu", argv).command_args()])
    return harness.emit(cross_cpu_record(args.clone, args.reference_machine, command), args.out)


if __name__ == "__main__":
    main()
