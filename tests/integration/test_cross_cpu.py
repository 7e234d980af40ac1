"""``benchmarks/cross_cpu.py``: a clone's reproduced scores recorded beside its commit's, and rendered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tooling.report.metrics_tables import cross_cpu

ROOT = Path(__file__).resolve().parents[2]
EVALUATE = "metrics/evaluate.json"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _clone_with_scores(repo: Path) -> dict:
    """A repository holding the committed evaluate.json, then a rerun's: the sequence AU score 0.05 higher."""
    committed = json.loads((ROOT / EVALUATE).read_text())
    (repo / "metrics").mkdir(parents=True)
    (repo / "pipeline").mkdir()
    (repo / "pipeline" / "code.py").write_text("x = 1\n")
    (repo / EVALUATE).write_text(json.dumps(committed))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "scores")
    rerun = json.loads(json.dumps(committed))
    rerun["face_frames"]["sequence"]["au"]["score"] += 0.05
    (repo / EVALUATE).write_text(json.dumps(rerun))
    return committed


def _run(repo: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.cross_cpu", "--clone", str(repo), "--reference-machine",
                           "CPU A [avx2]", "--out", str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


def test_the_record_holds_both_score_sets_and_renders_their_change(tmp_path: Path) -> None:
    repo, out = tmp_path / "clone", tmp_path / "cross_cpu.json"
    committed = _clone_with_scores(repo)
    proc = _run(repo, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert json.loads(proc.stdout) == record
    assert record["results"]["committed"] == committed
    assert record["reference_machine"] == "CPU A [avx2]" and len(record["commit"]) == 40
    assert record["machine"]["cpu_model"] and isinstance(record["machine"]["cpu_features"], list)
    rendered = cross_cpu(record)
    sequence = next(line for line in rendered.splitlines() if line.startswith("| sequence model"))
    assert "| +0.050 |" in sequence
    baseline = next(line for line in rendered.splitlines() if line.startswith("| trivial baseline"))
    assert baseline.count("+0.000") == 2
    assert f"commit {record['commit'][:7]}, written on CPU A [avx2]" in rendered


def test_a_clone_whose_code_changed_is_refused(tmp_path: Path) -> None:
    repo, out = tmp_path / "clone", tmp_path / "cross_cpu.json"
    _clone_with_scores(repo)
    (repo / "pipeline" / "code.py").write_text("x = 2\n")
    proc = _run(repo, out)
    assert proc.returncode != 0
    assert "the code or params differ from the commit" in proc.stderr and str(repo) in proc.stderr
    assert not out.exists()
