"""Ablation grids: experiment commands, names, and results tables (no dvc is run)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.ablation import (
    EXAMPLE_GRID, expand_grid, exp_run_command, experiment_name, flatten_metrics, format_csv, format_markdown,
    load_grid, rows_from_exp_show, run_grid,
)
from stages.cli import main

EXP_SHOW = Path(__file__).parent / "data" / "dvc_exp_show.json"  # written by `dvc exp show --json` (DVC 3.67)


def evaluate_json(au: float, expr: float) -> dict:
    return {"visual": {"au": {"f1": 0.0, "acc": 0.0, "score": 0.0}},
            "sequence": {"au": {"f1": au, "acc": 0.5, "score": au}, "expr": {"f1": expr, "acc": 0.5, "score": expr}}}


def test_grid_is_the_cartesian_product_first_axis_slowest() -> None:
    points = expand_grid(EXAMPLE_GRID)
    assert len(points) == 3 * 2 * 2
    assert points[0] == {"train_sequence.modalities": "visual", "train_sequence.window": 10, "train_sequence.layers": 1}
    assert points[1]["train_sequence.layers"] == 2 and points[-1]["train_sequence.modalities"] == "both"
    assert len({experiment_name(p) for p in points}) == len(points)


def test_commands_set_each_param_and_dotted_names_pass_through() -> None:
    point = expand_grid({"modalities": ["audio"], "window": [30], "evaluate.au_threshold": [0.4],
                         "input_projection": [False]})[0]
    argv = exp_run_command(point)
    assert argv[:5] == ["dvc", "exp", "run", "-n", "seq-audio-w30-au_threshold0p4-input_projectionfalse"]
    assert argv[5:] == ["-S", "train_sequence.modalities=audio", "-S", "train_sequence.window=30",
                        "-S", "evaluate.au_threshold=0.4", "-S", "train_sequence.input_projection=false"]
    assert "--temp" in exp_run_command(point, temp=True)


@pytest.mark.parametrize("axes", [{}, {"window": []}, {"window": "30"}, {"window": 30}])
def test_bad_grids_are_refused(axes: dict) -> None:
    with pytest.raises(ValueError):
        expand_grid(axes)


def test_grid_file(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("modalities: [visual, both]\nwindow: [10, 30]\n")
    assert load_grid(path) == {"modalities": ["visual", "both"], "window": [10, 30]}
    path.write_text("window: 30\n")
    with pytest.raises(ValueError, match="grid.yaml.*window"):
        load_grid(path)
    with pytest.raises(FileNotFoundError):
        load_grid(tmp_path / "missing.yaml")


def test_run_grid_reads_each_experiments_metrics_after_its_run() -> None:
    points = expand_grid({"window": [10, 30]})
    ran, results = [], iter([evaluate_json(0.2, 0.4), evaluate_json(0.6, 0.8)])
    rows = run_grid(points, ran.append, lambda: next(results))
    assert [argv[4] for argv in ran] == ["seq-w10", "seq-w30"]
    assert rows[1]["train_sequence.window"] == 30 and rows[1]["au.score"] == 0.6
    assert rows[1]["mean_score"] == pytest.approx(0.7)


def test_flatten_reads_train_sequence_metrics_too() -> None:
    flat = flatten_metrics({"au": {"f1": 0.5, "acc": 0.9, "score": 0.7}}, variant=None)
    assert flat == {"au.f1": 0.5, "au.acc": 0.9, "au.score": 0.7, "mean_score": 0.7}


def test_rows_from_real_dvc_exp_show_output() -> None:
    rows = rows_from_exp_show(json.loads(EXP_SHOW.read_text()), ["modalities", "window", "layers"],
                              "metrics/evaluate.json")
    names = [row["experiment"] for row in rows]
    assert "workspace" not in names and names[0] == "master"
    assert set(names) >= {"seq-visual-w10-l2", "seq-both-w20-l3"}
    row = next(r for r in rows if r["experiment"] == "seq-visual-w10-l2")
    assert (row["train_sequence.modalities"], row["train_sequence.window"], row["train_sequence.layers"]) == ("visual", 10, 2)
    assert row["au.f1"] == pytest.approx(0.1) and row["expr.f1"] == pytest.approx(0.2)


def test_tables_sort_best_first_and_agree() -> None:
    results = iter([evaluate_json(0.1, 0.1), evaluate_json(0.9, 0.9)])
    rows = run_grid(expand_grid({"layers": [1, 2]}), lambda argv: None, lambda: next(results))
    markdown = format_markdown(rows).splitlines()
    assert markdown[0].startswith("| experiment | layers | au.f1")
    assert markdown[2].startswith("| seq-l2 | 2 |") and markdown[3].startswith("| seq-l1 | 1 |")
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert [r["experiment"] for r in parsed] == ["seq-l2", "seq-l1"]
    assert float(parsed[0]["mean_score"]) == pytest.approx(0.9)


def test_stage_dry_run_prints_the_commands() -> None:
    result = CliRunner().invoke(main, ["ablate", "--dry-run", "--modalities", "visual,both", "--window", "10,30",
                                       "--layers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 4
    assert lines[0] == ("dvc exp run -n seq-visual-w10-l1 -S train_sequence.modalities=visual "
                        "-S train_sequence.window=10 -S train_sequence.layers=1")


def test_stage_runs_the_grid_and_writes_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.ablate as ablate

    metrics = tmp_path / "evaluate.json"
    calls = []

    class Done:
        returncode = 0

    def fake_run(argv, check=False):
        calls.append(argv)
        window = int(argv[-1].split("=")[1])
        metrics.write_text(json.dumps(evaluate_json(window / 100, 0.5)))
        return Done()

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    args = ["ablate", "--window", "10,30", "--metrics", str(metrics), "--markdown", str(tmp_path / "t.md"),
            "--csv", str(tmp_path / "t.csv")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [argv[4] for argv in calls] == ["seq-w10", "seq-w30"]
    assert (tmp_path / "t.md").read_text().splitlines()[2].startswith("| seq-w30 | 30 | 0.3000")
    assert (tmp_path / "t.csv").read_text().startswith("experiment,train_sequence.window,au.f1")


def test_stage_refuses_grid_file_with_axis_options(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("window: [10]\n")
    result = CliRunner().invoke(main, ["ablate", "--grid", str(grid), "--window", "30", "--dry-run"])
    assert result.exit_code == 2 and "either --grid" in result.output
