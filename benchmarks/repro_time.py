"""Wall time of ``make repro`` in a fresh clone, as a new user runs it; writes one JSON record.

Clones the repository at its current commit into a temporary folder (``git clone``: committed files
only, no ``.venv``, no ``cache/``, no DVC cache), runs ``make repro`` there (it creates the venv,
installs mmaffect with its dependencies and runs ``dvc repro`` on the synthetic demo) and records
its wall time, the commit, the size of the installed venv, and the load average before and after.
Meant for an otherwise idle machine: the record marks itself ``busy`` when other processes shared
the cores. Needs network access for the install, as ``make repro`` does.

    python -m benchmarks.repro_time                          # from the repository root
    python -m benchmarks.repro_time --python python3.11      # the interpreter make uses (PYTHON=)
    python -m benchmarks.repro_time --keep ../repro-clone    # keep the clone, to compare its outputs
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from tooling.bench import harness


def fresh_clone(source: Path, into: Path) -> str:
    """Clone ``source`` into ``into``; return the cloned commit."""
    subprocess.run(["git", "clone", "--quiet", str(source), str(into)], check=True)
    return subprocess.run(["git", "-C", str(into), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def time_make_repro(clone: Path, python: str) -> float:
    """Seconds of ``make PYTHON=python repro`` in ``clone``; a failing run stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run(["make", f"PYTHON={python}", "repro"], cwd=clone, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"make repro in {clone} failed with exit status {result.returncode}")
    return seconds


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = harness.parser("repro_time", __doc__)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository to clone")
    parser.add_argument("--python", default="python3", help="the interpreter `make` builds the venv with")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the clone (default: the system's temporary folder; it needs room for the venv)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="clone into this new folder and keep it (its outputs, dvc.lock and venv) after the run")
    args = parser.parse_args()
    bench = harness.start("repro_time")
    if args.keep is not None and args.keep.exists():
        raise SystemExit(f"--keep {args.keep}: exists; name a folder the clone can create")
    with tempfile.TemporaryDirectory(prefix="mmaffect-repro-", dir=args.work) as tmp:
        clone = args.keep if args.keep is not None else Path(tmp) / "mmaffect"
        commit = fresh_clone(args.repo.resolve(), clone)
        seconds = time_make_repro(clone, args.python)
        results = {
            "command_timed": f"make PYTHON={args.python} repro",
            "commit": commit,
            "wall_seconds": round(seconds, 1),
            "venv_bytes": tree_bytes(clone / ".venv"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
    bench.publish(results, harness.env_threads(), args.out)


if __name__ == "__main__":
    main()
