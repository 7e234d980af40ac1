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


def test_a_bad_param_value_is_a_usage_error_not_a_traceback(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  au_threshold: 2.0\n  metric_variant: abaw2\n  timeline_videos: 1\n"
                      "  timeline_variant: sequence\n  seed: 0\n")
    inputs = [tmp_path / n for n in ("prepared", "visual.zarr", "audio.zarr", "audio", "sequence")]
    for path in inputs:
        path.mkdir()
    outputs = [tmp_path / "evaluation", tmp_path / "metrics.json"]
    args = ["evaluate", *map(str, inputs + outputs), "--params", str(params)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "evaluate.au_threshold: must be in (0, 1), got 2.0" in result.output and "Traceback" not in result.output
