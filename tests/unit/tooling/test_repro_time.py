"""benchmarks/repro_time.py times `make repro` in a fresh clone of the committed tree, nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import repro_time

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def _repo(path: Path) -> Path:
    path.mkdir()
    (path / "Makefile").write_text("repro:\n\t@echo $(PYTHON) > ran.txt\n\tmkdir -p .venv && echo 12345 > .venv/lib\n")
    subprocess.run([*GIT, "init", "-q"], cwd=path, check=True)
    subprocess.run([*GIT, "add", "Makefile"], cwd=path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "m"], cwd=path, check=True)
    (path / "untracked.txt").write_text("not committed")
    return path


def test_make_repro_runs_in_a_clone_of_the_committed_tree(tmp_path: Path) -> None:
    source = _repo(tmp_path / "src")
    clone = tmp_path / "clone"
    commit = repro_time.fresh_clone(source, clone)
    assert len(commit) == 40 and not (clone / "untracked.txt").exists()
    seconds = repro_time.time_make_repro(clone, "python3.11")
    assert seconds > 0 and (clone / "ran.txt").read_text().strip() == "python3.11"
    assert repro_time.tree_bytes(clone / ".venv") == 6
    assert not (source / "ran.txt").exists()


def test_a_failing_make_repro_stops_the_benchmark(tmp_path: Path) -> None:
    source = _repo(tmp_path / "src")
    (source / "Makefile").write_text("repro:\n\texit 3\n")
    with pytest.raises(SystemExit, match="exit status 2"):
        repro_time.time_make_repro(source, "python3")
