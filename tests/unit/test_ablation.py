"""Ablation grids: experiment commands, names, repeats over seeds and draws, summaries and tables (no dvc is run)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.ablation import (
    EXAMPLE_GRID, arm_name, attach_exp_show_metrics, default_seed_keys, expand_grid, exp_run_command,
    experiment_name, experiment_rows, flatten_metrics, format_csv, format_markdown, load_grid, load_points,
    lookup_params, missing_keys, plan_repeats,
    render_ablation_table, rows_from_exp_show, run_repeats, summarize_runs,
)
from stages.cli import main

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
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
    assert argv[:5] == ["dvc", "exp", "run", "-n", "audio-w30-au_threshold0p4-input_projectionfalse"]
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


def test_run_repeats_reads_each_experiments_metrics_after_its_run() -> None:
    points = expand_grid({"window": [10, 30]})
    ran, results, saved = [], iter([evaluate_json(0.2, 0.4), evaluate_json(0.6, 0.8)]), []
    runs = run_repeats(plan_repeats(points), ran.append, lambda: next(results), on_done=saved.append)
    assert [len(done) for done in saved] == [1, 2] and saved[-1] == runs
    rows = experiment_rows(runs)
    assert [argv[4] for argv in ran] == ["w10", "w30"]
    assert rows[1]["train_sequence.window"] == 30 and rows[1]["au.score"] == 0.6
    assert rows[1]["mean_score"] == pytest.approx(0.7)


def test_flatten_reads_train_sequence_metrics_too() -> None:
    flat = flatten_metrics({"au": {"f1": 0.5, "acc": 0.9, "score": 0.7}}, variant=None)
    assert flat == {"au.f1": 0.5, "au.acc": 0.9, "au.score": 0.7, "mean_score": 0.7}
    trainer = {"validation": {"face_frames": {"au": {"score": 0.7}, "expr": {"score": 0.5}},
                              "all_frames": {"au": {"score": 0.6}, "expr": {"score": 0.4}}}, "best_epoch": 3}
    assert flatten_metrics(trainer, "validation.all_frames") == {"au.score": 0.6, "expr.score": 0.4,
                                                                 "mean_score": pytest.approx(0.5),
                                                                 "au_expr_score": pytest.approx(0.5)}


def test_flatten_reads_a_frame_set_of_the_evaluate_json_by_dotted_path() -> None:
    evaluate = {"sequence": {"au": {"score": 0.7}, "expr": {"score": 0.5}},
                "face_frames": {"sequence": {"au": {"score": 0.7}, "expr": {"score": 0.5}}},
                "all_frames": {"sequence": {"au": {"score": 0.6}, "expr": {"score": 0.4}}}}
    assert flatten_metrics(evaluate, "sequence") == flatten_metrics(evaluate, "face_frames.sequence")
    assert flatten_metrics(evaluate, "all_frames.sequence") == {"au.score": 0.6, "expr.score": 0.4,
                                                                "mean_score": pytest.approx(0.5),
                                                                "au_expr_score": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="'all_frames.fusion'.*'fusion'"):
        flatten_metrics(evaluate, "all_frames.fusion")


def test_rows_from_real_dvc_exp_show_output() -> None:
    rows = rows_from_exp_show(json.loads(EXP_SHOW.read_text()), ["modalities", "window", "layers"],
                              "metrics/evaluate.json")
    names = [row["experiment"] for row in rows]
    assert "workspace" not in names and names[0] == "master"
    assert set(names) >= {"visual-w10-l2", "both-w20-l3"}
    row = next(r for r in rows if r["experiment"] == "visual-w10-l2")
    assert (row["train_sequence.modalities"], row["train_sequence.window"], row["train_sequence.layers"]) == ("visual", 10, 2)
    assert row["au.f1"] == pytest.approx(0.1) and row["expr.f1"] == pytest.approx(0.2)


def test_tables_sort_best_first_and_agree() -> None:
    results = iter([evaluate_json(0.1, 0.1), evaluate_json(0.9, 0.9)])
    rows = experiment_rows(run_repeats(plan_repeats(expand_grid({"layers": [1, 2]})), lambda argv: None,
                                       lambda: next(results)))
    markdown = format_markdown(rows).splitlines()
    assert markdown[0].startswith("| experiment | layers | au.f1")
    assert markdown[2].startswith("| l2 | 2 |") and markdown[3].startswith("| l1 | 1 |")
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert [r["experiment"] for r in parsed] == ["l2", "l1"]
    assert float(parsed[0]["mean_score"]) == pytest.approx(0.9)


def test_stage_dry_run_prints_the_commands() -> None:
    result = CliRunner().invoke(main, ["ablate", "--dry-run", "--modalities", "visual,both", "--window", "10,30",
                                       "--layers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 4
    assert lines[0] == ("dvc exp run -n visual-w10-l1 -S train_sequence.modalities=visual "
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
    assert [argv[4] for argv in calls] == ["w10", "w30"]
    assert (tmp_path / "t.md").read_text().splitlines()[2].startswith("| w30 | 30 | 0.3000")
    assert (tmp_path / "t.csv").read_text().startswith("experiment,train_sequence.window,au.f1")


def test_stage_refuses_grid_file_with_axis_options(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("window: [10]\n")
    result = CliRunner().invoke(main, ["ablate", "--grid", str(grid), "--window", "30", "--dry-run"])
    assert result.exit_code == 2 and "either --grid" in result.output


# --- repeats over seeds and draws ---------------------------------------------------------------------------------

def _run_record(arm: str, draw: int, seed: int, au: float, expr: float) -> dict:
    return {"arm": arm, "draw": draw, "seed": seed, "params": {"train_sequence.modalities": arm},
            "metrics": {"au.score": au, "expr.score": expr, "mean_score": (au + expr) / 2}}


# A table small enough to check by hand: visual AU 0.60/0.70/0.80 (mean 0.70, sd 0.10); both AU 0.65/0.80/0.80
# (mean 0.75, sd sqrt(0.0075/2) = 0.0866); paired both - visual 0.05/0.10/0.00 (mean 0.05, sd 0.05).
HAND_TABLE = [
    _run_record("visual", 0, 0, 0.60, 0.40), _run_record("visual", 1, 0, 0.70, 0.50),
    _run_record("visual", 2, 0, 0.80, 0.60),
    _run_record("both", 0, 0, 0.65, 0.40), _run_record("both", 1, 0, 0.80, 0.50),
    _run_record("both", 2, 0, 0.80, 0.60),
]


def test_summary_of_a_hand_built_table() -> None:
    summary = summarize_runs(HAND_TABLE, references=["visual"])
    assert summary["metrics"] == ["au.score", "expr.score", "mean_score"]
    visual, both = summary["arms"]
    assert (visual["arm"], visual["n"], both["arm"], both["n"]) == ("visual", 3, "both", 3)
    assert visual["mean"]["au.score"] == pytest.approx(0.70) and visual["sd"]["au.score"] == pytest.approx(0.10)
    assert both["mean"]["au.score"] == pytest.approx(0.75) and both["sd"]["au.score"] == pytest.approx(0.0075 ** 0.5)
    assert visual["params"] == {"train_sequence.modalities": "visual"}
    [diff] = summary["differences"]
    assert (diff["arm"], diff["reference"], diff["n"]) == ("both", "visual", 3)
    assert diff["mean"]["au.score"] == pytest.approx(0.05) and diff["sd"]["au.score"] == pytest.approx(0.05)
    # identical EXPR scores: no difference and no spread, although each arm's EXPR spread is 0.10
    assert diff["mean"]["expr.score"] == pytest.approx(0.0) and diff["sd"]["expr.score"] == pytest.approx(0.0)
    assert visual["sd"]["expr.score"] == pytest.approx(0.10)
    assert diff["mean"]["mean_score"] == pytest.approx(0.025)


def test_differences_pair_runs_by_draw_and_seed_only() -> None:
    runs = [_run_record("visual", 0, 0, 0.5, 0.5), _run_record("visual", 0, 1, 0.7, 0.5),
            _run_record("both", 0, 1, 0.9, 0.5), _run_record("both", 1, 0, 0.1, 0.5)]
    summary = summarize_runs(runs, references=["both"])
    [diff] = summary["differences"]
    assert (diff["arm"], diff["reference"], diff["n"]) == ("visual", "both", 1)
    assert diff["mean"]["au.score"] == pytest.approx(-0.2) and diff["sd"]["au.score"] is None
    assert [arm["n"] for arm in summary["arms"]] == [2, 2]


def test_summary_refuses_unknown_reference_and_duplicate_runs() -> None:
    with pytest.raises(ValueError, match="reference arm.*audio"):
        summarize_runs(HAND_TABLE, references=["audio"])
    with pytest.raises(ValueError, match="two runs"):
        summarize_runs(HAND_TABLE + [HAND_TABLE[0]], references=[])


def test_rendered_table_shows_mean_sd_runs_and_paired_differences() -> None:
    lines = render_ablation_table(summarize_runs(HAND_TABLE, references=["visual"])).splitlines()
    assert lines[0] == "| arm | runs | AU score | EXPR score | mean score |"
    assert lines[2] == "| visual | 3 | 0.700 ± 0.100 | 0.500 ± 0.100 | 0.600 ± 0.100 |"
    assert lines[3].startswith("| both | 3 | 0.750 ± 0.087 |")
    assert lines[4] == ("| both − visual (paired) | 3 pairs | +0.050 ± 0.050, 95 % CI -0.074 to +0.174: inconclusive "
                        "| +0.000 ± 0.000, 95 % CI +0.000 to +0.000: equivalent "
                        "| +0.025 ± 0.025, 95 % CI -0.037 to +0.087: inconclusive |")
    single = render_ablation_table(summarize_runs(HAND_TABLE[:1]))
    assert single.splitlines()[2] == "| visual | 1 | 0.600 | 0.400 | 0.500 |"


def test_plan_repeats_runs_each_draw_once_then_its_arms_and_seeds() -> None:
    points = expand_grid({"modalities": ["visual", "both"]})
    runs = plan_repeats(points, seeds=[0, 1], seed_keys=default_seed_keys(points), data_seeds=[5, 6])
    assert default_seed_keys(points) == ["train_sequence.seed"]
    assert [r["experiment"] for r in runs[:4]] == ["visual-d5-s0", "visual-d5-s1", "both-d5-s0",
                                                 "both-d5-s1"]
    assert [r["draw"] for r in runs] == [5] * 4 + [6] * 4
    assert runs[-1]["params"] == {"train_sequence.modalities": "both", "synth.seed": 6, "train_sequence.seed": 1}
    assert [r["experiment"] for r in plan_repeats(points)] == ["visual", "both"]
    with pytest.raises(ValueError, match="repeat"):
        plan_repeats(points, data_seeds=[1, 1])
    with pytest.raises(ValueError, match="seed param"):
        plan_repeats(points, seeds=[0], seed_keys=[])


def test_grid_file_may_list_arms(tmp_path: Path) -> None:
    path = tmp_path / "arms.yaml"
    path.write_text("- {modalities: both, window: 1}\n- {modalities: both, window: 30}\n- {modalities: visual}\n")
    points = load_points(path)
    assert [arm_name(p) for p in points] == ["both-w1", "both-w30", "visual"]
    # a workspace experiment keeps the previous one's window: the arm without one runs at the params' value
    assert missing_keys(points) == ["train_sequence.window"]
    with pytest.raises(ValueError, match="train_sequence.window"):
        plan_repeats(points)
    base = lookup_params({"train_sequence": {"window": 20, "layers": 1}}, missing_keys(points))
    assert plan_repeats(points, base=base)[2]["params"] == {"train_sequence.window": 20,
                                                          "train_sequence.modalities": "visual"}
    with pytest.raises(ValueError, match="my.yaml.*train_sequence.window"):
        lookup_params({"train_sequence": {}}, ["train_sequence.window"], "my.yaml")
    path.write_text("- {}\n")
    with pytest.raises(ValueError, match="arms.yaml"):
        load_points(path)


def test_listed_arms_may_be_named_and_the_name_is_not_a_param(tmp_path: Path) -> None:
    path = tmp_path / "arms.yaml"
    path.write_text("- {arm: scratch, finetune_visual.backbone_init: random}\n- {arm: pretrained}\n")
    points = load_points(path)
    assert [arm_name(p) for p in points] == ["scratch", "pretrained"]
    base = lookup_params({"finetune_visual": {"backbone_init": "pretrained"}}, missing_keys(points))
    runs = plan_repeats(points, data_seeds=[0, 1], base=base)
    assert [r["experiment"] for r in runs] == ["scratch-d0", "pretrained-d0", "scratch-d1", "pretrained-d1"]
    assert runs[1]["params"] == {"finetune_visual.backbone_init": "pretrained", "synth.seed": 0}
    assert exp_run_command(runs[0]["params"], runs[0]["experiment"]) == [
        "dvc", "exp", "run", "-n", "scratch-d0", "-S", "finetune_visual.backbone_init=random", "-S", "synth.seed=0"]
    assert default_seed_keys(points) == ["finetune_visual.seed"]
    path.write_text("- {arm: a, modalities: both}\n- {arm: a, modalities: visual}\n")
    with pytest.raises(ValueError, match="two arms have the name 'a'"):
        load_points(path)


def test_attach_metrics_of_named_experiments_from_exp_show() -> None:
    runs = plan_repeats(expand_grid({"modalities": ["visual"], "window": [10], "layers": [2]}))
    [run] = attach_exp_show_metrics(runs, json.loads(EXP_SHOW.read_text()), "metrics/evaluate.json")
    assert run["experiment"] == "visual-w10-l2" and run["metrics"]["au.f1"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="audio"):
        attach_exp_show_metrics(plan_repeats(expand_grid({"modalities": ["audio"]})),
                                json.loads(EXP_SHOW.read_text()), "metrics/evaluate.json")


def test_stage_repeats_seeds_and_writes_the_summary_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.ablate as ablate

    metrics, out = tmp_path / "evaluate.json", tmp_path / "ablation.json"
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "0123abcd\n", ""

    def fake_run(argv, check=False, **kwargs):
        if Path(argv[0]).name == "dvc":  # the venv's dvc, by full path, or the one on PATH
            calls.append(argv)
            params = dict(item.split("=") for item in argv[6::2])
            bonus = 0.1 if params["train_sequence.modalities"] == "both" else 0.0
            seed = int(params["train_sequence.seed"])
            metrics.write_text(json.dumps(evaluate_json(0.5 + bonus + 0.01 * seed, 0.5)))
        return Done()

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    args = ["ablate", "--modalities", "visual,both", "--seeds", "3", "--reference", "visual", "--metrics",
            str(metrics), "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 6 and calls[1][4] == "visual-s1"
    # the declared statistic (mean_score by default) first
    assert "| arm | runs | mean score (declared) | AU score | EXPR score |" in result.output
    assert ("| both − visual (paired) | 3 pairs | +0.050 ± 0.000, 95 % CI +0.050 to +0.050: difference "
            "| +0.100 ± 0.000, 95 % CI +0.100 to +0.100: difference |") in result.output
    assert "| visual | 3 | 0.505 ± 0.005 | 0.510 ± 0.010 |" in result.output
    document = json.loads(out.read_text())
    assert document["complete"] is True and len(document["runs"]) == 6
    assert document["date"] <= document["finished"]
    # options in the command's own order, defaults left out
    assert document["command"] == f"mmaffect ablate --modalities visual,both --seeds 3 --reference visual " \
                                  f"--json {out} --metrics {metrics}"
    assert document["git_commit"] == "0123abcd" and document["cpu"] and document["torch_threads"] >= 1
    assert document["seeds"] == [0, 1, 2] and document["seed_params"] == ["train_sequence.seed"]
    assert render_ablation_table(document) in result.output


def test_stage_saves_a_partial_record_before_the_reference_arm_has_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.ablate as ablate

    metrics, out = tmp_path / "evaluate.json", tmp_path / "ablation.json"
    partial = []

    class Done:
        returncode, stdout, stderr = 0, "0123abcd\n", ""

    def fake_run(argv, check=False, **kwargs):
        if Path(argv[0]).name == "dvc":
            if out.exists():  # the record written after the previous run
                partial.append(json.loads(out.read_text()))
            metrics.write_text(json.dumps(evaluate_json(0.5, 0.5)))
        return Done()

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["ablate", "--modalities", "visual,both", "--reference", "both",
                                       "--metrics", str(metrics), "--json", str(out)])
    assert result.exit_code == 0, result.output
    [declared, after_visual] = partial
    assert declared["runs"] == [] and declared["statistic"] == "mean_score" and declared["complete"] is False
    assert after_visual["complete"] is False and [r["arm"] for r in after_visual["runs"]] == ["visual"]
    assert after_visual["differences"] == []
    assert json.loads(out.read_text())["differences"][0]["reference"] == "both"


def _params_file(path: Path, **train_sequence) -> Path:
    """The repository's params.yaml with ``train_sequence`` values changed."""
    params = yaml.safe_load(PARAMS.read_text())
    params["train_sequence"].update(train_sequence)
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_sets_params_some_arms_leave_unset_from_the_params_file(tmp_path: Path) -> None:
    arms, params = tmp_path / "arms.yaml", tmp_path / "params.yaml"
    arms.write_text("- {modalities: both}\n- {modalities: both, window: 1}\n")
    _params_file(params, window=30, modalities="both")
    result = CliRunner().invoke(main, ["ablate", "--grid", str(arms), "--params", str(params), "--data-seeds", "4",
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "dvc exp run -n both-d4 -S train_sequence.window=30 -S train_sequence.modalities=both -S synth.seed=4",
        "dvc exp run -n both-w1-d4 -S train_sequence.modalities=both -S train_sequence.window=1 -S synth.seed=4"]


def test_stage_limits_each_experiment_to_the_named_stages() -> None:
    result = CliRunner().invoke(main, ["ablate", "--modalities", "visual", "--stage", "finetune-visual", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "dvc exp run -n visual -S train_sequence.modalities=visual finetune-visual"]


def test_stage_refuses_a_reference_that_is_not_an_arm() -> None:
    result = CliRunner().invoke(main, ["ablate", "--modalities", "visual,both", "--reference", "audio", "--dry-run"])
    assert result.exit_code == 2 and "audio" in result.output


def test_every_run_is_the_dvc_experiment_named_by_its_arm() -> None:
    """The tables name arms; `dvc exp show` names experiments: the two names are one."""
    points = expand_grid({"modalities": ["visual", "both"], "window": [10, 30]})
    assert [(r["experiment"], r["arm"]) for r in plan_repeats(points)][:2] == [("visual-w10", "visual-w10"),
                                                                             ("visual-w30", "visual-w30")]
    assert all(r["experiment"] == r["arm"] for r in plan_repeats(points))
    repeated = plan_repeats(points, seeds=[0, 1], seed_keys=["train_sequence.seed"], data_seeds=[2])
    assert all(r["experiment"] == f"{r['arm']}-d2-s{r['seed']}" for r in repeated)
    assert arm_name({}) == experiment_name({}) == "baseline"


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("window: [10, 0]\n", "grid.yaml: arm w0: train_sequence.window: "),
        ("- {modalities: both, windw: 10}\n", "grid.yaml: arm both-windw10: train_sequence: unknown key(s) ['windw']"),
        ("- {modalities: sound}\n", "grid.yaml: arm sound: train_sequence.modalities: "),
        ("- {modalities: both, trainer.lr: 0.1}\n", "grid.yaml: arm both-lr0p1: trainer.lr: no params section 'trainer'"),
        ("- {finetune_visual.epochs: many}\n", "grid.yaml: arm epochsmany: finetune_visual.epochs: "),
    ],
)
def test_dry_run_checks_the_grid_against_the_configs(tmp_path: Path, grid: str, message: str) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(grid)
    result = CliRunner().invoke(main, ["ablate", "--grid", str(path), "--params", str(PARAMS), "--dry-run"])
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert line.startswith(f"Error: {tmp_path / message}"), line
    assert "dvc exp run" not in result.output


def test_dry_run_checks_the_seeds_it_sets_too(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ablate", "--modalities", "both", "--seeds", "2", "--seed-param",
                                       "train_sequence.sed", "--params", str(PARAMS), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "Error: --modalities/--window/--layers: arm both: train_sequence: unknown key(s) ['sed']" in result.output


def test_a_failed_experiment_leaves_the_workspace_as_the_last_good_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.ablate as ablate

    monkeypatch.chdir(tmp_path)
    params = _params_file(tmp_path / "params.yaml", window=30)
    (tmp_path / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: x\n    metrics:\n"
                                       "      - metrics/evaluate.json:\n          cache: false\n")
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.parent.mkdir()
    lock, out = tmp_path / "dvc.lock", tmp_path / "model.pt"
    lock.write_text("lock: start\n")
    out.write_text("model: start")
    calls = []

    class Result:
        def __init__(self, code: int) -> None:
            self.returncode = code

    def fake_dvc(argv, check=False, **kwargs):
        calls.append(argv[1:3])
        if argv[1:3] == ["checkout", "--force"]:   # the outputs dvc.lock names, from the cache
            out.write_text(lock.read_text().strip().replace("lock", "model"))
            return Result(0)
        # what `dvc exp run -S train_sequence.window=W` does to the workspace
        window = argv[-1].split("=")[1]
        text = params.read_text().replace("window: 30", f"window: {window}")
        params.write_text(text)
        out.unlink()
        if window == "0":
            return Result(1)   # failed mid-pipeline: its params set, outputs deleted
        lock.write_text(f"lock: w{window}\n")
        out.write_text(f"model: w{window}")
        metrics.write_text(json.dumps(evaluate_json(0.5, 0.5)))
        return Result(0)

    monkeypatch.setattr(ablate.subprocess, "run", fake_dvc)
    monkeypatch.setattr(ablate, "check_grid", lambda *args: None)   # window 0 is refused before running
    result = CliRunner().invoke(main, ["ablate", "--window", "10,0", "--metrics", str(metrics)])
    assert result.exit_code == 1
    assert "Error: dvc exp run -n w0 failed with exit status 1; the workspace is back" in result.output
    assert "window: 10" in params.read_text()   # the last good experiment's params, not the failed one's
    assert lock.read_text() == "lock: w10\n" and out.read_text() == "model: w10"
    assert json.loads(metrics.read_text()) == evaluate_json(0.5, 0.5)
    assert calls[-1] == ["checkout", "--force"]


def test_every_params_section_has_the_config_its_stage_builds() -> None:
    from pipeline.config import from_section
    from stages.grid_check import SECTION_CONFIGS, config_classes

    params = yaml.safe_load(PARAMS.read_text())
    assert set(SECTION_CONFIGS) == set(params) - {"data"}   # data: read by dvc.yaml only
    for section, cls in config_classes(set(params)).items():
        from_section(cls, params[section], where=f"params.yaml:{section}")


# --- valence-arousal beside AU and EXPR ---------------------------------------------------------------------------

def evaluate_json_va(au: float, expr: float, va: float | None) -> dict:
    """``evaluate_json`` whose sequence variant also has the ``va`` entry ``va_metrics`` gives (None: no VA)."""
    metrics = evaluate_json(au, expr)
    if va is not None:
        metrics["sequence"]["va"] = {"ccc_valence": va + 0.1, "ccc_arousal": va - 0.1, "score": va,
                                     "frames_valence": 120, "frames_arousal": 118}
    return metrics


def test_flatten_carries_the_va_scores_and_averages_the_tasks_present() -> None:
    flat = flatten_metrics(evaluate_json_va(0.6, 0.3, 0.45), "sequence")
    assert (flat["va.ccc_valence"], flat["va.ccc_arousal"], flat["va.score"]) == pytest.approx((0.55, 0.35, 0.45))
    assert flat["va.frames_valence"] == 120
    assert flat["mean_score"] == pytest.approx((0.6 + 0.3 + 0.45) / 3)
    assert flat["au_expr_score"] == pytest.approx((0.6 + 0.3) / 2)   # the same statistic with or without VA
    # no VA in the metrics (data without VA_Set): as before
    assert flatten_metrics(evaluate_json_va(0.6, 0.3, None), "sequence")["mean_score"] == pytest.approx(0.45)
    # a NaN VA score (a dimension without labelled frames) does not count as a task scored
    unscored = evaluate_json_va(0.6, 0.3, 0.0)
    unscored["sequence"]["va"]["score"] = float("nan")
    assert flatten_metrics(unscored, "sequence")["mean_score"] == pytest.approx(0.45)
    unscored["sequence"]["va"]["score"] = None     # the same written as JSON null
    assert "va.score" not in flatten_metrics(unscored, "sequence")
    assert flatten_metrics(unscored, "sequence")["mean_score"] == pytest.approx(0.45)


def _va_rows(va: list[float | None]) -> list[dict]:
    results = iter([evaluate_json_va(0.5, 0.5, score) for score in va])
    return experiment_rows(run_repeats(plan_repeats(expand_grid({"va_mse_weight": [0.0, 1.0][:len(va)]})),
                                       lambda argv: None, lambda: next(results)))


def test_tables_carry_va_columns_only_when_the_metrics_have_va() -> None:
    markdown = format_markdown(_va_rows([0.2, 0.6])).splitlines()
    header = [cell.strip() for cell in markdown[0].strip("|").split("|")]
    assert header == ["experiment", "va_mse_weight", "au.f1", "au.acc", "au.score", "expr.f1", "expr.acc",
                      "expr.score", "va.ccc_valence", "va.ccc_arousal", "va.score", "mean_score", "au_expr_score"]
    # the VA score orders the rows through the mean score: weight 1 first
    assert markdown[2].startswith("| va_mse_weight1p0 | 1.0000 |")
    csv_header = format_csv(_va_rows([0.2, 0.6])).splitlines()[0].split(",")
    assert csv_header[-5:] == ["va.ccc_valence", "va.ccc_arousal", "va.score", "mean_score", "au_expr_score"]
    without = format_markdown(_va_rows([None, None])).splitlines()[0]
    assert "va." not in without.replace("va_mse_weight", "") and without.rstrip(" |").endswith("mean_score")


def test_the_summary_shows_the_va_score_only_when_scored() -> None:
    def runs(va: float | None) -> list[dict]:
        return [{"arm": arm, "replicate": r, "params": {}, "metrics": flatten_metrics(
            evaluate_json_va(0.5, 0.5, None if va is None else va + step + r / 100), "sequence")}
            for arm, step in (("ccc", 0.0), ("mse", 0.1)) for r in range(3)]

    scored = summarize_runs(runs(0.3), references=["ccc"], statistic="va.score")
    assert scored["metrics"] == ["va.score", "au.score", "expr.score", "mean_score"]
    [diff] = scored["differences"]
    assert diff["mean"]["va.score"] == pytest.approx(0.1)
    table = render_ablation_table(scored).splitlines()
    assert table[0] == "| arm | runs | VA score (declared) | AU score | EXPR score | mean score |"
    assert table[2].startswith("| ccc | 3 | 0.310 ± 0.010 |")
    unscored = summarize_runs(runs(None), references=["ccc"])
    assert unscored["metrics"] == ["au.score", "expr.score", "mean_score"]
    assert "VA score" not in render_ablation_table(unscored)


def test_stage_declares_the_va_score_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.ablate as ablate

    metrics = tmp_path / "evaluate.json"

    class Done:
        returncode = 0
        stdout = ""

    def fake_run(argv, check=False, **kwargs):
        if argv[1:3] == ["exp", "run"]:
            window = int(argv[-1].split("=")[1])
            metrics.write_text(json.dumps(evaluate_json_va(0.5, 0.5, window / 100)))
        return Done()

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    record = tmp_path / "va.json"
    result = CliRunner().invoke(main, ["ablate", "--window", "10,30", "--metrics", str(metrics), "--statistic",
                                       "va.score", "--json", str(record)])
    assert result.exit_code == 0, result.output
    assert "| arm | runs | VA score (declared) |" in result.output
    saved = json.loads(record.read_text())
    assert saved["statistic"] == "va.score" and saved["metrics"][0] == "va.score"
    assert [run["metrics"]["va.score"] for run in saved["runs"]] == [0.1, 0.3]
