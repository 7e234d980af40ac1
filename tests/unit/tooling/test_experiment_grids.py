"""The committed experiment grids (``experiments/*.yaml``) are valid ``mmaffect ablate --grid`` files.

Each is checked as the README runs it: every arm's values built into the params' configs, the
references it names among its arms, one ``dvc exp run`` per arm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages.cli import main

ROOT = Path(__file__).resolve().parents[3]
# grid file -> the options the README runs it with (besides --grid, --data-seeds and --json)
GRIDS = {
    "ablation_arms.yaml": ["--reference", "visual", "--reference", "both-w1-b320"],
    "pretrain_arms.yaml": ["--stage", "finetune-visual", "--metrics", "metrics/visual.json",
                           "--variant", "validation.face_frames", "--reference", "scratch"],
}


def test_every_grid_file_is_checked_here() -> None:
    assert sorted(p.name for p in (ROOT / "experiments").glob("*.yaml")) == sorted(GRIDS)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_grid_plans_one_experiment_per_arm(name: str) -> None:
    grid = ROOT / "experiments" / name
    arms = yaml.safe_load(grid.read_text())
    result = CliRunner().invoke(main, ["ablate", "--grid", str(grid), "--params", str(ROOT / "params.yaml"),
                                       "--data-seeds", "0", *GRIDS[name], "--dry-run"])
    assert result.exit_code == 0, result.output
    planned = result.output.splitlines()
    assert len(planned) == len(arms) and all(line.startswith("dvc exp run -n ") for line in planned)
