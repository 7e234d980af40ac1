"""The ``mmaffect`` group: every stage is listed with a summary and loads its command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from stages.cli import STAGES, SUMMARIES, main


def test_every_stage_has_a_summary_in_the_listing() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert set(SUMMARIES) == set(STAGES)
    for name in STAGES:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_loads_and_explains_itself(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: mmaffect {name}" in result.output or f"Usage: main {name}" in result.output
    assert len(result.output.splitlines()) > 5


def test_stage_module_runs_as_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "manifest.json" in proc.stdout
