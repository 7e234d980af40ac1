"""The committed experiment grids (``experiments/*.yaml``) are valid ``mmaffect ablate --grid`` files.

Each is checked as the README runs it: every arm's values built into the params' configs, the
references it names among its arms, one ``dvc exp run`` per arm.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.ablation import arm_name, arm_params, load_points
from stages.cli import main

ROOT = Path(__file__).resolve().parents[3]
FINETUNE = ["--stage", "finetune-visual", "--metrics", "metrics/visual.json", "--variant", "validation.face_frames"]
# grid file -> the options the README, docs/results.md or the study script runs it with (besides --grid,
# --data-seeds, --replicates and --json)
GRIDS = {
    "ablation_arms.yaml": ["--reference", "visual", "--reference", "both-w1-b320"],
    "pretrain_arms.yaml": [*FINETUNE, "--reference", "scratch"],
    "pretrain_arms_sequence.yaml": ["--metrics", "metrics/evaluate.json", "--variant", "face_frames.sequence",
                                    "--statistic", "au_expr_score", "--reference", "sequence-scratch"],
    "pretrain_lr_grid.yaml": FINETUNE,
    "va_grid.yaml": ["--statistic", "va.score", "--reference", "both-ccc"],
}


def test_every_grid_file_is_checked_here() -> None:
    assert sorted(p.name for p in (ROOT / "experiments").glob("*.yaml")) == sorted(GRIDS)


def _arm_count(grid: Path) -> int:
    """Arms of a grid file: one per listed arm, or the product of a mapping's value counts."""
    arms = yaml.safe_load(grid.read_text())
    return len(arms) if isinstance(arms, list) else math.prod(len(values) for values in arms.values())


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_grid_plans_one_experiment_per_arm(name: str) -> None:
    grid = ROOT / "experiments" / name
    result = CliRunner().invoke(main, ["ablate", "--grid", str(grid), "--params", str(ROOT / "params.yaml"),
                                       "--data-seeds", "0", *GRIDS[name], "--dry-run"])
    assert result.exit_code == 0, result.output
    planned = result.output.splitlines()
    assert len(planned) == _arm_count(grid) and all(line.startswith("dvc exp run -n ") for line in planned)


def _study_dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``experiments/pretrain_study.sh --dry-run`` from the repository root, its files under ``tmp_path``."""
    paths = {"CONTROL_DIR": str(tmp_path / "controls"), "LR_RECORD": str(tmp_path / "lr.json"),
             "LR_CHOICE": str(tmp_path / "choice.json"), "STUDY_RECORD": str(tmp_path / "study.json"),
             "SEQUENCE_RECORD": str(tmp_path / "sequence.json")}
    environment = {**os.environ, **paths, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "experiments/pretrain_study.sh", "--dry-run"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


def test_study_script_dry_run_prints_each_step_and_writes_nothing(tmp_path: Path) -> None:
    result = _study_dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    control = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert control[0] == "+ dvc repro"   # every output dvc.lock names in the cache before an experiment
    assert control[1].startswith("+ dvc exp run -f -n control-d1000 -S synth.seed=1000 ")
    assert control[2] == f"+ mmaffect backbone-of cache/visual/model.pt {tmp_path / 'controls'}"
    assert len(control) == 4 and control[3].startswith(f"+ python -m tooling.study choose-lr {tmp_path / 'lr.json'}")
    assert control[3].endswith("--check-arms experiments/pretrain_arms.yaml "
                               "--check-arms experiments/pretrain_arms_sequence.yaml")
    planned = result.stdout.splitlines()
    # the rate grid on one tuning replicate, 4 arms x 8 replicates, then the sequence model's 2 arms x 8
    assert len(planned) == 8 + 4 * 8 + 2 * 8
    assert planned[0].startswith("dvc exp run -n lr0p005-pretrained-r100 -f ")
    assert planned[8].startswith("dvc exp run -n pretrained-r0 -f ") and planned[39].startswith(
        "dvc exp run -n shuffled-labels-r7 -f ")
    # the sequence part runs the whole pipeline, every trainer's seed set to the replicate
    assert planned[40].startswith("dvc exp run -n sequence-pretrained-r0 -f ") and planned[-1].startswith(
        "dvc exp run -n sequence-scratch-r7 -f ")
    assert all(f"-S {key}=7" in planned[-1] for key in ("synth.seed", "train_audio.seed", "train_sequence.seed"))
    assert not planned[-1].rstrip().endswith("finetune-visual")
    assert not any(tmp_path.iterdir())


def test_study_script_runs_only_the_steps_asked_for(tmp_path: Path) -> None:
    result = _study_dry_run(tmp_path, STEPS="d")
    assert result.returncode == 0, result.stderr
    control = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert all(line.startswith("+ python -m tooling.study choose-lr") for line in control)   # the rates still checked
    planned = result.stdout.splitlines()
    assert len(planned) == 2 * 8 and planned[0].startswith("dvc exp run -n sequence-pretrained-r0 -f ")
    wrong = _study_dry_run(tmp_path, STEPS="e")
    assert wrong.returncode == 2 and "STEPS must be letters of 0abcd, got 'e'" in wrong.stderr


def test_study_script_skips_the_control_once_it_exists(tmp_path: Path) -> None:
    (tmp_path / "controls").mkdir()
    (tmp_path / "controls" / "backbone.pth").write_bytes(b"")
    (tmp_path / "controls" / "backbone.json").write_text("{}")
    result = _study_dry_run(tmp_path, STEPS="a")
    assert result.returncode == 0, result.stderr
    assert "present, skipped" in result.stderr and "control-d1000" not in result.stderr


def test_study_script_will_not_reproduce_params_an_interrupted_experiment_left(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "experiments").mkdir(parents=True)
    script = repo / "experiments" / "pretrain_study.sh"
    script.write_text((ROOT / "experiments" / "pretrain_study.sh").read_text())
    (repo / "params.yaml").write_text("synth:\n  seed: 0\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    (repo / "params.yaml").write_text("synth:\n  seed: 3\n")   # what a killed experiment leaves
    result = subprocess.run(["bash", str(script), "--dry-run"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "params.yaml differs from HEAD" in result.stderr
    assert "+ dvc repro" not in result.stderr


def test_study_script_refuses_unknown_arguments() -> None:
    result = subprocess.run(["bash", "experiments/pretrain_study.sh", "--now"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_va_grid_arms_differ_in_the_mse_weight_and_the_audio_alone() -> None:
    points = load_points(ROOT / "experiments" / "va_grid.yaml")
    assert [arm_name(point) for point in points] == ["both-ccc", "both-ccc-mse1", "visual-ccc"]
    assert [arm_params(point) for point in points] == [
        {"train_sequence.modalities": "both", "train_sequence.va_mse_weight": 0.0},
        {"train_sequence.modalities": "both", "train_sequence.va_mse_weight": 1.0},
        {"train_sequence.modalities": "visual", "train_sequence.va_mse_weight": 0.0}]
