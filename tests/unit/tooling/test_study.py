"""``python -m tooling.study choose-lr``: the learning rate per start, chosen on held-out scores only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooling.study import check_arms, choose, main

LR, INIT = "finetune_visual.lr", "finetune_visual.backbone_init"


def _run(experiment: str, lr: float, init: str, held_out: float, validation: float = 0.9) -> dict:
    return {"experiment": experiment, "arm": experiment, "params": {LR: lr, INIT: init},
            "metrics": {"selection_score": held_out, "mean_score": validation}}


def _record(tmp_path: Path, complete: bool = True) -> Path:
    runs = [_run("lr0p01-pretrained", 0.01, "pretrained", 0.41, validation=0.2),
            _run("lr0p05-pretrained", 0.05, "pretrained", 0.38, validation=0.7),   # better validation: not chosen
            _run("lr0p01-random", 0.01, "random", 0.30),
            _run("lr0p05-random", 0.05, "random", 0.45),
            _run("lr0p02-random", 0.02, "random", 0.45)]   # tie with 0.05: the smaller rate
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"complete": complete, "runs": runs}))
    return path


def test_each_start_gets_the_rate_with_the_best_held_out_score(tmp_path: Path) -> None:
    chosen = choose(json.loads(_record(tmp_path).read_text()), LR, INIT, "grid.json")
    assert chosen["pretrained"]["value"] == 0.01 and chosen["pretrained"]["selection_score"] == 0.41
    assert chosen["random"]["value"] == 0.02 and chosen["random"]["candidates"] == {"0.01": 0.30, "0.02": 0.45,
                                                                                    "0.05": 0.45}


def test_replicates_of_one_rate_are_averaged() -> None:
    runs = [_run("a", 0.01, "random", 0.5), _run("b", 0.01, "random", 0.1), _run("c", 0.05, "random", 0.4)]
    chosen = choose({"complete": True, "runs": runs}, LR, INIT, "grid.json")
    assert chosen["random"]["value"] == 0.05 and chosen["random"]["candidates"]["0.01"] == pytest.approx(0.3)


@pytest.mark.parametrize(("record", "message"), [
    ({"complete": False, "runs": []}, "grid.json: the tuning runs are not complete"),
    ({"complete": True, "runs": [{"experiment": "x", "params": {LR: 0.01, INIT: "random"},
                                  "metrics": {"mean_score": 0.5}}]}, "grid.json: run 'x' has no held-out"),
    ({"complete": True, "runs": [{"experiment": "x", "params": {LR: 0.01}, "metrics": {"selection_score": 0.5}}]},
     f"grid.json: run 'x' does not set {INIT}"),
])
def test_a_record_it_cannot_choose_from_is_refused(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose(record, LR, INIT, "grid.json")


def test_arms_are_checked_against_the_choice() -> None:
    chosen = {"pretrained": {"value": 0.01}, "random": {"value": 0.05}}
    arms = [{"arm": "pretrained", INIT: "pretrained", LR: 0.01}, {"arm": "scratch", INIT: "random", LR: 0.02},
            {"arm": "control", INIT: "pretrained"}]
    assert check_arms(arms, chosen, LR, INIT, "arms.yaml") == [
        f"arms.yaml: arm scratch: {LR} is 0.02, the tuning chose 0.05 for {INIT}=random",
        f"arms.yaml: arm control: set {INIT} and {LR} in the arm (the study runs in the workspace, where the "
        "previous experiment's values stay)"]


def test_command_prints_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record, out, arms = _record(tmp_path), tmp_path / "choice.json", tmp_path / "arms.yaml"
    arms.write_text(f"- {{arm: pretrained, {INIT}: pretrained, {LR}: 0.01}}\n"
                    f"- {{arm: scratch, {INIT}: random, {LR}: 0.02}}\n")
    assert main(["choose-lr", str(record), "--out", str(out), "--check-arms", str(arms)]) == 0
    printed = capsys.readouterr().out
    assert "| pretrained | 0.01 | 0.410 | 1 | 0.01: 0.410, 0.05: 0.380 |" in printed
    assert json.loads(out.read_text())["chosen"]["random"]["value"] == 0.02

    # every arms file given is checked, the good one first
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"- {{arm: scratch, {INIT}: random, {LR}: 0.05}}\n")
    assert main(["choose-lr", str(record), "--check-arms", str(arms), "--check-arms", str(wrong)]) == 1
    error = capsys.readouterr().err
    assert error == f"Error: {wrong}: arm scratch: {LR} is 0.05, the tuning chose 0.02 for {INIT}=random\n"


def test_a_missing_record_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["choose-lr", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err == f"Error: {tmp_path / 'none.json'}: no such tuning record " \
                                      "(run the learning-rate grid first)\n"
