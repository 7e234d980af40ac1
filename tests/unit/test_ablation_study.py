"""A paired study with ``mmaffect ablate``: replicates, the declared statistic, resuming an interrupted record."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.ablation import (
    ARM_KEY, REPLICATE_KEYS, expand_grid, experiment_name, flatten_metrics, plan_replicates, resumable_runs,
    run_repeats, study_plan, summarize_runs,
)
from stages.cli import main

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
ARMS = "- {arm: pretrained}\n- {arm: scratch, finetune_visual.backbone_init: random}\n"
POINTS = [{ARM_KEY: "pretrained"}, {ARM_KEY: "scratch", "finetune_visual.backbone_init": "random"}]


def evaluate_json(au: float, expr: float) -> dict:
    return {"sequence": {"au": {"f1": au, "acc": 0.5, "score": au}, "expr": {"f1": expr, "acc": 0.5, "score": expr}}}


def test_replicates_run_replicate_by_replicate_and_set_every_seed() -> None:
    runs = plan_replicates(POINTS, [5, 6], base={"finetune_visual.backbone_init": "pretrained"})
    assert [(r["experiment"], r["arm"], r["replicate"]) for r in runs] == [
        ("pretrained-r5", "pretrained", 5), ("scratch-r5", "scratch", 5),
        ("pretrained-r6", "pretrained", 6), ("scratch-r6", "scratch", 6)]
    assert runs[1]["params"] == {"finetune_visual.backbone_init": "random", **{key: 5 for key in REPLICATE_KEYS}}
    assert runs[2]["params"] == {"finetune_visual.backbone_init": "pretrained", **{key: 6 for key in REPLICATE_KEYS}}


def test_an_arm_may_not_set_what_each_replicate_sets() -> None:
    with pytest.raises(ValueError, match="arm a sets synth.seed, which each replicate sets"):
        plan_replicates([{ARM_KEY: "a", "synth.seed": 3}], [0])
    with pytest.raises(ValueError, match="repeat a value"):
        plan_replicates(POINTS, [0, 0], base={"finetune_visual.backbone_init": "pretrained"})


def test_differences_pair_runs_of_the_same_replicate() -> None:
    runs = [{"arm": arm, "replicate": r, "params": {}, "metrics": {"mean_score": value}}
            for arm, r, value in [("a", 0, 0.50), ("a", 1, 0.60), ("a", 2, 0.55),
                                  ("b", 2, 0.60), ("b", 0, 0.52), ("b", 1, 0.63)]]
    [diff] = summarize_runs(runs, ["a"], statistic="mean_score")["differences"]
    assert diff["n"] == 3 and diff["mean"]["mean_score"] == pytest.approx((0.02 + 0.03 + 0.05) / 3)


def test_the_declared_statistic_comes_first() -> None:
    runs = [{"arm": "a", "replicate": 0, "params": {}, "metrics": {"au.f1": 0.4, "mean_score": 0.5}}]
    summary = summarize_runs(runs, statistic="au.f1", margin=0.05)
    assert summary["metrics"][0] == "au.f1" and summary["statistic"] == "au.f1"
    assert summary["equivalence_margin"] == 0.05


def test_stage_dry_run_plans_replicates_with_the_params_it_is_given(tmp_path: Path) -> None:
    arms = tmp_path / "arms.yaml"
    arms.write_text(ARMS)
    result = CliRunner().invoke(main, ["ablate", "--grid", str(arms), "--params", str(PARAMS), "--replicates", "2",
                                       "--replicate-start", "3", "--replicate-params",
                                       "synth.seed,finetune_visual.seed", "--stage", "finetune-visual", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "dvc exp run -n pretrained-r3 -S finetune_visual.backbone_init=pretrained -S synth.seed=3 "
        "-S finetune_visual.seed=3 finetune-visual",
        "dvc exp run -n scratch-r3 -S finetune_visual.backbone_init=random -S synth.seed=3 -S finetune_visual.seed=3 "
        "finetune-visual",
        "dvc exp run -n pretrained-r4 -S finetune_visual.backbone_init=pretrained -S synth.seed=4 "
        "-S finetune_visual.seed=4 finetune-visual",
        "dvc exp run -n scratch-r4 -S finetune_visual.backbone_init=random -S synth.seed=4 -S finetune_visual.seed=4 "
        "finetune-visual"]


@pytest.mark.parametrize(("args", "message"), [
    (["--replicates", "2", "--seeds", "2"], "give either --replicates or --seeds/--data-seeds, not both"),
    (["--replicates", "2", "--data-seeds", "0,1"], "give either --replicates or --seeds/--data-seeds, not both"),
    (["--replicate-start", "4"], "--replicate-params and --replicate-start need --replicates"),
    (["--resume"], "--resume needs --json"),
    (["--resume", "--json", "x.json", "--temp"], "--resume continues workspace runs"),
    (["--statistic", "score"], "'score' is not a metric of the summary"),
])
def test_stage_refuses_options_that_do_not_go_together(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["ablate", "--modalities", "visual", *args, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert message in result.output


class Interrupted(Exception):
    """The study stopped from outside (a killed process, a lost machine)."""


def _fake_dvc(metrics: Path, calls: list[str], stop_after: int | None = None):
    """``subprocess.run`` standing in for dvc and git: each experiment writes metrics from its arm and replicate;
    with ``stop_after``, the experiment after that many is interrupted."""

    class Done:
        returncode, stdout, stderr = 0, "0123abcd\n", ""

    def run(argv, check=False, **kwargs):
        if Path(argv[0]).name == "dvc" and argv[1:3] == ["exp", "run"]:
            if stop_after is not None and len(calls) == stop_after:
                raise Interrupted("killed")
            calls.append(argv[4])
            assert "-f" in argv   # a resumed study replaces an experiment its record does not hold
            params = dict(argv[i + 1].split("=") for i, word in enumerate(argv) if word == "-S")
            replicate = int(params["synth.seed"])
            bonus = 0.03 if params["finetune_visual.backbone_init"] == "pretrained" else 0.0
            metrics.write_text(json.dumps(evaluate_json(0.5 + bonus + 0.01 * replicate, 0.4 + 0.02 * (replicate % 2))))
        return Done()

    return run


def _study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: Path, *extra: str, stop_after: int | None = None,
           params: Path = PARAMS):
    import stages.ablate as ablate

    arms, metrics = tmp_path / "arms.yaml", tmp_path / "metrics.json"
    arms.write_text(ARMS)
    calls: list[str] = []
    monkeypatch.setattr(ablate.subprocess, "run", _fake_dvc(metrics, calls, stop_after))
    monkeypatch.setattr(ablate, "Workspace", lambda root, run: _NoWorkspace())
    args = ["ablate", "--grid", str(arms), "--params", str(params), "--replicates", "3", "--reference", "scratch",
            "--metrics", str(metrics), "--json", str(out), "--resume", *extra]
    return CliRunner().invoke(main, args), calls


class _NoWorkspace:
    """The workspace kept for undoing a failed experiment: nothing to keep here (the fake dvc changes no files)."""

    def save(self) -> None:
        pass

    def restore(self) -> None:
        pass


DATES = ("date", "finished", "resumed")


def test_an_interrupted_study_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, whole_calls = _study(tmp_path, monkeypatch, tmp_path / "whole.json")
    assert whole.exit_code == 0, whole.output
    assert whole_calls == ["pretrained-r0", "scratch-r0", "pretrained-r1", "scratch-r1", "pretrained-r2", "scratch-r2"]

    out = tmp_path / "resumed.json"
    stopped, first_calls = _study(tmp_path, monkeypatch, out, stop_after=3)
    assert isinstance(stopped.exception, Interrupted)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and [r["experiment"] for r in partial["runs"]] == whole_calls[:3]
    assert [r["replicate"] for r in partial["runs"]] == [0, 0, 1]

    planned, none_run = _study(tmp_path, monkeypatch, out, "--dry-run")   # what is left, the record untouched
    assert none_run == [] and [line.split()[4] for line in planned.output.splitlines()] == whole_calls[3:]
    assert json.loads(out.read_text()) == partial

    resumed, rest = _study(tmp_path, monkeypatch, out)
    assert resumed.exit_code == 0, resumed.output
    assert rest == whole_calls[3:]   # only the runs the record lacked
    record, expected = json.loads(out.read_text()), json.loads((tmp_path / "whole.json").read_text())
    assert record["complete"] is True and len(record["resumed"]) == 1
    assert record["date"] == partial["date"]   # the study's start
    strip = lambda doc: {k: v for k, v in doc.items() if k not in DATES and k != "command"}  # noqa: E731
    assert strip(record) == strip(expected)
    assert record["command"].replace(str(out), "X") == expected["command"].replace(str(tmp_path / "whole.json"), "X")
    assert record["statistic"] == "mean_score" and record["plan"]["statistic"] == "mean_score"
    [diff] = record["differences"]
    assert diff["n"] == 3 and diff["mean"]["au.score"] == pytest.approx(0.03)
    assert diff["verdict"]["mean_score"] == "difference"

    finished = out.read_text()
    again, none = _study(tmp_path, monkeypatch, out)   # a complete record: nothing to run, the record kept
    assert again.exit_code == 0 and none == [] and out.read_text() == finished


@pytest.mark.parametrize(("extra", "differ"), [
    (["--equivalence-margin", "0.05"], "equivalence_margin"),
    (["--statistic", "au.score"], "statistic"),
    (["--reference", "pretrained"], "references"),
    (["--replicate-params", "synth.seed,finetune_visual.seed"], "replicate_params"),
])
def test_resuming_a_record_of_another_plan_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], differ: str) -> None:
    out = tmp_path / "study.json"
    _study(tmp_path, monkeypatch, out, stop_after=1)
    before = out.read_text()
    result, calls = _study(tmp_path, monkeypatch, out, *extra)
    assert result.exit_code == 1 and calls == []
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert line.startswith(f"Error: {out}: made by another plan (its {differ}")
    assert out.read_text() == before


@pytest.mark.parametrize(("changed", "refused"), [("pipeline/train/visual.py\n", True), ("", False)])
def test_resuming_at_a_commit_whose_pipeline_changed_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: str, refused: bool) -> None:
    import stages.ablate as ablate

    out = tmp_path / "study.json"
    _study(tmp_path, monkeypatch, out, stop_after=1)
    record = json.loads(out.read_text())
    record["git_commit"] = "feedc0de" * 5   # started at another commit than the fake git's HEAD
    out.write_text(json.dumps(record))
    fake_dvc, diffs = _fake_dvc(tmp_path / "metrics.json", []), []

    def run(argv, check=False, **kwargs):
        if argv[:2] == ["git", "diff"]:
            diffs.append(argv)
            return subprocess.CompletedProcess(argv, 0, changed, "")
        return fake_dvc(argv, check, **kwargs)

    monkeypatch.setattr(ablate.subprocess, "run", run)
    result = CliRunner().invoke(main, ["ablate", "--grid", str(tmp_path / "arms.yaml"), "--params", str(PARAMS),
                                       "--replicates", "3", "--reference", "scratch", "--metrics",
                                       str(tmp_path / "metrics.json"), "--json", str(out), "--resume"])
    assert diffs and diffs[0][3:5] == [record["git_commit"], "0123abcd"]
    assert set(ablate.MEASURED_PATHS) <= set(diffs[0][diffs[0].index("--") + 1:])
    if refused:
        assert result.exit_code == 1
        [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert "started at commit feedc0defe, and 1 file(s) that decide what a run measures differ" in line
        assert "pipeline/train/visual.py" in line and "git worktree add DIR feedc0defe" in line
        assert json.loads(out.read_text()) == record
    else:   # only docs or tests changed: the study goes on and keeps the commit it started at
        assert result.exit_code == 0, result.output
        done = json.loads(out.read_text())
        assert done["complete"] is True and done["git_commit"] == record["git_commit"]


def test_resuming_a_record_that_is_not_resumable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "study.json"
    out.write_text(json.dumps({"runs": []}))
    result, calls = _study(tmp_path, monkeypatch, out)
    assert result.exit_code == 1 and calls == []
    assert f"Error: {out}: not a resumable ablation record" in result.output
    out.write_text("{not json")
    result, calls = _study(tmp_path, monkeypatch, out)
    assert result.exit_code == 1 and calls == [] and f"Error: {out}: not a readable ablation record" in result.output


def test_resuming_with_fewer_replicates_than_recorded_is_refused() -> None:
    plan = study_plan(POINTS, ["scratch"], "mean_score", 0.02, {})
    base = {"finetune_visual.backbone_init": "pretrained"}
    three = [{**run, "metrics": {"mean_score": 0.5}} for run in plan_replicates(POINTS, [0, 1, 2], base=base)]
    record = {"plan": plan, "runs": three}
    assert len(resumable_runs(record, plan, plan_replicates(POINTS, [0, 1, 2, 3], base=base), "s.json")) == 6
    with pytest.raises(ValueError, match="s.json: holds run 'pretrained-r2', which this plan does not make"):
        resumable_runs(record, plan, plan_replicates(POINTS, [0, 1], base=base), "s.json")


def test_a_recorded_run_without_metrics_runs_again() -> None:
    base = {"finetune_visual.backbone_init": "pretrained"}
    planned = plan_replicates(POINTS, [0], base=base)
    plan = study_plan(POINTS, ["scratch"], "mean_score", 0.02, {})
    record = {"plan": plan, "runs": [{**planned[0], "metrics": {"mean_score": 0.5}}, {**planned[1], "metrics": {}}]}
    finished = resumable_runs(record, plan, planned, "s.json")
    ran: list[str] = []
    runs = run_repeats(planned, lambda argv: ran.append(argv[4]), lambda: evaluate_json(0.6, 0.6),
                       finished=finished)
    assert ran == ["scratch-r0"] and [r["metrics"]["mean_score"] for r in runs] == [0.5, pytest.approx(0.6)]



def test_a_resumed_study_keeps_the_base_values_it_started_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workspace experiments leave their -S values in params.yaml (here the scratch arm's backbone_init: random);
    the arm that leaves the param unset still runs at the value the study started with."""
    out, params = tmp_path / "study.json", tmp_path / "params.yaml"
    _study(tmp_path, monkeypatch, out, stop_after=2)
    left = yaml.safe_load(PARAMS.read_text())
    left["finetune_visual"]["backbone_init"] = "random"
    params.write_text(yaml.safe_dump(left))
    result, rest = _study(tmp_path, monkeypatch, out, params=params)
    assert result.exit_code == 0, result.output
    assert rest == ["pretrained-r1", "scratch-r1", "pretrained-r2", "scratch-r2"]
    record = json.loads(out.read_text())
    assert [r["params"]["finetune_visual.backbone_init"] for r in record["runs"]][::2] == ["pretrained"] * 3


def test_a_trainers_held_out_score_of_its_kept_epoch_is_recorded() -> None:
    visual = {"validation": {"face_frames": {"au": {"score": 0.5}, "expr": {"score": 0.3}}}, "best_epoch": 2,
              "selection": {"mode": "holdout", "per_epoch": [{"epoch": 1, "selection_score": 0.31},
                                                            {"epoch": 2, "selection_score": 0.37}]}}
    row = flatten_metrics(visual, "validation.face_frames")
    assert row["selection_score"] == 0.37 and row["mean_score"] == pytest.approx(0.4)
    visual["selection"]["mode"] = "validation"   # scored on the validation set: not a score to tune on
    assert "selection_score" not in flatten_metrics(visual, "validation.face_frames")


def test_a_learning_rate_grid_names_its_experiments_by_lr_and_start() -> None:
    points = expand_grid({"finetune_visual.lr": [0.01], "finetune_visual.backbone_init": ["pretrained", "random"]})
    assert [experiment_name(p) for p in points] == ["lr0p01-pretrained", "lr0p01-random"]
