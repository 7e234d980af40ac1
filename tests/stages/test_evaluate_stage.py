"""``mmaffect evaluate`` through click: arguments, params section, outputs and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from _evaluation_inputs import EvaluationInputs, build_evaluation_inputs
from pipeline.fsio import OUTPUT_MARKER
from pipeline.labels import AU_NAMES, EXPR_NAMES
from stages.cli import main

PARAMS = {"evaluate": {"au_threshold": 0.5, "metric_variant": "abaw2", "timeline_videos": 0,
                       "timeline_variant": "sequence", "seed": 0, "expr_f1_classes": "all"}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> EvaluationInputs:
    return build_evaluation_inputs(tmp_path_factory.mktemp("evaluate-stage"))


def _params(tmp_path: Path, section: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(section))
    return path


def _args(inputs: EvaluationInputs, out: Path) -> list[str]:
    return ["evaluate", str(inputs.prepared), str(inputs.visual), str(inputs.audio),
            str(inputs.audio_model.parent), str(inputs.sequence_model.parent), str(out / "evaluation"),
            str(out / "metrics" / "evaluate.json")]


def test_evaluate_stage_writes_metrics_and_outputs(inputs, tmp_path: Path):
    params = _params(tmp_path, PARAMS)
    headline = tmp_path / "metrics" / "headline" / "evaluate.json"
    result = CliRunner().invoke(main, _args(inputs, tmp_path) + ["--params", str(params), "--device", "cpu",
                                                                 "--headline", str(headline)])
    assert result.exit_code == 0, result.output
    assert "face_frames visual: AU 1.0000, EXPR 1.0000, VA 1.0000" in result.output
    assert "all_frames baseline: AU " in result.output
    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert sorted(metrics) == ["all_frames", "baseline", "calibrated", "face_frames", "fusion", "sequence", "visual"]
    assert "face_frames sequence at its own AU thresholds (calibrated): AU " in result.output
    assert sorted(metrics["sequence"]["expr"]) == ["acc", "f1", "score"]
    assert sorted(metrics["all_frames"]) == ["baseline", "frames", "fusion", "sequence", "visual"]
    out = tmp_path / "evaluation"
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "plot_data", "plots", "submission", "tables"]
    assert sorted(metrics["sequence"]["va"]) == ["ccc_arousal", "ccc_valence", "score"]
    # the headline: each variant's AU, EXPR and VA score on face frames, and its AU score at its own thresholds
    variants = ("visual", "fusion", "sequence")
    assert json.loads(headline.read_text()) == {
        **{variant: {task: {"score": metrics[variant][task]["score"]} for task in ("au", "expr", "va")}
           for variant in variants},
        "calibrated": {variant: {"au": {"score": metrics["calibrated"]["face_frames"][variant]["au"]["score"]}}
                       for variant in variants}}
    # the plots' data beside the PNGs: one row per labelled face frame, one per AU
    confusion = (out / "plot_data" / "confusion_sequence.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) - 1 == metrics["face_frames"]["frames"]["expr"]
    assert all(set(line.split(",")) <= set(EXPR_NAMES) for line in confusion[1:])
    au_f1 = (out / "plot_data" / "au_f1_visual.csv").read_text().splitlines()
    assert au_f1[0] == "au,f1" and [line.split(",")[0] for line in au_f1[1:]] == list(AU_NAMES)
    va = (out / "plot_data" / "va_fusion.csv").read_text().splitlines()
    assert va[0] == "valence,valence_predicted,arousal,arousal_predicted"
    assert len(va) - 1 == metrics["face_frames"]["frames"]["va"]   # both dimensions labelled together here
    assert all(-1.0 <= float(value) <= 1.0 for line in va[1:] for value in line.split(","))
    assert not list((out / "plots").glob("timeline_*.png"))   # timeline_videos: 0
    assert (out / "plots" / "confusion_sequence.png").is_file()
    assert (out / "submission" / "sequence" / "EXPR_Set" / "vidB_right.txt").is_file()
    assert (out / "submission" / "sequence" / "VA_Set" / "vidB_right.txt").is_file()
    assert (out / "plots" / "va_density.png").is_file()


def test_evaluate_stage_reports_a_bad_params_key(inputs, tmp_path: Path):
    params = _params(tmp_path, {"evaluate": {**PARAMS["evaluate"], "threshold": 0.3}})
    result = CliRunner().invoke(main, _args(inputs, tmp_path) + ["--params", str(params)])
    assert result.exit_code == 2
    assert "unknown key(s) ['threshold']" in result.output


def test_evaluate_stage_reports_a_missing_onnx_model(inputs, tmp_path: Path):
    params = _params(tmp_path, PARAMS)
    result = CliRunner().invoke(main, _args(inputs, tmp_path) + ["--params", str(params), "--backend", "onnx"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "sequence.onnx" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "evaluation").exists()


def test_evaluate_help_says_what_it_reads_and_writes():
    result = CliRunner().invoke(main, ["evaluate", "--help"])
    assert result.exit_code == 0
    for word in ("manifest.json", "METRICS_JSON", "submission", "--backend", "--device"):
        assert word in result.output


def test_evaluate_stage_without_va_labels_writes_no_va(tmp_path: Path):
    # an Aff-Wild2 copy without VA_Set: the scores, headline and outputs are those of AU and EXPR alone
    inputs = build_evaluation_inputs(tmp_path / "inputs", with_va=False)
    headline = tmp_path / "metrics" / "headline" / "evaluate.json"
    result = CliRunner().invoke(main, _args(inputs, tmp_path) + ["--params", str(_params(tmp_path, PARAMS)),
                                                                 "--device", "cpu", "--headline", str(headline)])
    assert result.exit_code == 0, result.output
    assert "face_frames visual: AU 1.0000, EXPR 1.0000\n" in result.output
    assert all("va" not in scores for scores in json.loads(headline.read_text()).values())
    assert not list((tmp_path / "evaluation").rglob("VA_Set"))


def test_evaluate_stage_names_a_store_without_the_va_the_manifest_asks_for(tmp_path: Path):
    # a store embedded before VA, with a manifest prepared after: one line naming the store and subject
    inputs = build_evaluation_inputs(tmp_path / "inputs", with_va=False)
    fresh = build_evaluation_inputs(tmp_path / "fresh", with_va=True)
    result = CliRunner().invoke(main, ["evaluate", str(fresh.prepared), *_args(inputs, tmp_path)[2:],
                                       "--params", str(_params(tmp_path, PARAMS)), "--device", "cpu"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    # the VA training subjects' labels are read first, for the baseline's mean
    assert f"{inputs.visual}/vidB_left: no array(s) ['va']" in errors[0] and "(re-run embed-visual)" in errors[0]
    assert not (tmp_path / "evaluation").exists()
