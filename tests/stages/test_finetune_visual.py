"""``mmaffect finetune-visual`` through click, and a real kill -9 / rerun of the stage process."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from _finetune_params import PARAMS, write_params as _params
from _kill import kill_after_checkpoint
from pipeline.model_files.onnx_export import read_metadata
from pipeline.model_files.visual import build_from_checkpoint
from stages.cli import main


def _args(prepared: Path, frames: Path, tmp_path: Path, params: Path) -> list[str]:
    return [str(prepared), str(frames), str(tmp_path / "visual"), str(tmp_path / "metrics/visual.json"),
            "--params", str(params), "--device", "cpu", "--work-dir", str(tmp_path / "work"), "--no-progress"]


def test_help_says_what_it_reads_and_writes() -> None:
    result = CliRunner().invoke(main, ["finetune-visual", "--help"])
    assert result.exit_code == 0
    for word in ("manifest.json", "labels.h5", "FRAMES_H5", "model.pt", "METRICS_JSON", "--device", "--workers",
                 "--work-dir", "torchrun"):
        assert word in result.output


def test_bad_params_and_inputs_are_one_line_errors(tiny_prepared: Path, tiny_frames: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, epochs=1)
    params.write_text(params.read_text().replace("lr: 0.05", "learning_rate: 0.05"))
    result = CliRunner().invoke(main, ["finetune-visual", *_args(tiny_prepared, tiny_frames, tmp_path, params)])
    assert result.exit_code == 2 and "learning_rate" in result.output
    params.write_text(PARAMS.format(epochs=0, selection="holdout"))
    result = CliRunner().invoke(main, ["finetune-visual", *_args(tiny_prepared, tiny_frames, tmp_path, params)])
    assert result.exit_code == 2 and "finetune_visual.epochs: must be >= 1" in result.output
    params.write_text(PARAMS.format(epochs=1, selection="best"))
    result = CliRunner().invoke(main, ["finetune-visual", *_args(tiny_prepared, tiny_frames, tmp_path, params)])
    assert result.exit_code == 2 and "selection.mode" in result.output
    # a share that leaves a task no training video says which key to change
    params.write_text(PARAMS.format(epochs=1, selection="holdout").replace("share: 0.2", "share: 0.9"))
    result = CliRunner().invoke(main, ["finetune-visual", *_args(tiny_prepared, tiny_frames, tmp_path, params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "selection.share 0.9 holds out every Aff-Wild2 training video of the" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["finetune-visual", *_args(empty, tiny_frames, tmp_path, _params(tmp_path, 1))])
    assert result.exit_code == 1 and "manifest not found" in result.output and "Traceback" not in result.output
    if not torch.cuda.is_available():
        args = _args(tiny_prepared, tiny_frames, tmp_path, _params(tmp_path, 1))
        result = CliRunner().invoke(main, ["finetune-visual", *args, "--device", "cuda"])
        assert result.exit_code == 1 and "no CUDA device" in result.output


@pytest.mark.slow
def test_killed_stage_resumes_from_its_last_checkpoint(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = _args(tiny_prepared, tiny_frames, tmp_path, _params(tmp_path, epochs=3))
    kill_after_checkpoint("stages.finetune_visual", [*args, "--checkpoint-every", "1"], tmp_path / "work/state.pt")
    assert not (tmp_path / "visual/model.pt").exists() and not (tmp_path / "metrics/visual.json").exists()

    caplog.set_level(logging.INFO, logger="pipeline.train.visual")
    result = CliRunner().invoke(main, ["finetune-visual", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from epoch")]
    assert resumed, [r.getMessage() for r in caplog.records]
    assert "of 3 epochs" in resumed[0] and "resuming from epoch 1 batch 0" not in resumed[0]
    metrics = json.loads((tmp_path / "metrics/visual.json").read_text())
    assert metrics["epochs"] == 3 and 1 <= summary["best_epoch"] == metrics["best_epoch"] <= 3
    assert set(metrics) >= {"validation", "baseline", "selection", "epochs", "best_epoch"}
    assert summary["validation"] == metrics["validation"] and summary["selection"] == "holdout"
    assert [e["epoch"] for e in metrics["selection"]["per_epoch"]] == [1, 2, 3]
    ckpt = torch.load(tmp_path / "visual/model.pt", map_location="cpu", weights_only=True)
    assert build_from_checkpoint(ckpt).backbone.width_mult == 0.0625


def test_a_diverged_run_is_a_one_line_error_and_publishes_nothing(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    params = _params(tmp_path, epochs=1)
    params.write_text(params.read_text().replace("lr: 0.05", "lr: 1.0e+8"))
    result = CliRunner().invoke(main, ["finetune-visual", *_args(tiny_prepared, tiny_frames, tmp_path, params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.strip()
    assert "\n" not in message and "finetune_visual: training diverged at epoch 1, batch" in message
    assert "finetune_visual.lr" in message and "finetune_visual.max_grad_norm" in message
    assert not (tmp_path / "visual/model.pt").exists() and not (tmp_path / "metrics/visual.json").exists()


def test_onnx_option_exports_as_export_onnx_does_and_an_export_param_change_only_exports_again(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = _params(tmp_path, epochs=1)
    export = "export_onnx: {{opset: 17, parity_rtol: 1.0e-4, example_batch: {batch}, int8_crops: 16}}\n"
    params.write_text(params.read_text() + export.format(batch=2))
    onnx = tmp_path / "onnx" / "visual.onnx"
    args = [*_args(tiny_prepared, tiny_frames, tmp_path, params), "--onnx", str(onnx)]
    result = CliRunner().invoke(main, ["finetune-visual", *args])
    assert result.exit_code == 0, result.output
    # the same files as export-onnx writes from the published model.pt
    again = tmp_path / "again" / "visual.onnx"
    result = CliRunner().invoke(main, ["export-onnx", str(tmp_path / "visual/model.pt"), str(again), "--params",
                                       str(params), "--int8-calibration", str(tiny_frames)])
    assert result.exit_code == 0, result.output
    for name in ("visual.onnx", "visual.int8.onnx"):
        assert (onnx.parent / name).read_bytes() == (again.parent / name).read_bytes(), name
    # the model's AU thresholds travel with it: model.pt, visual.onnx and its int8 copy
    thresholds = torch.load(tmp_path / "visual/model.pt", weights_only=True)["au_thresholds"]
    assert thresholds["strategy"] == "per_au"
    for name in ("visual.onnx", "visual.int8.onnx"):
        assert read_metadata(onnx.parent / name)["au_thresholds"] == thresholds, name

    # a changed export param reruns the stage under DVC: the finished training resumes and is not redone
    model = (tmp_path / "visual/model.pt").read_bytes()
    params.write_text(params.read_text().replace("example_batch: 2", "example_batch: 3"))
    caplog.set_level(logging.INFO, logger="pipeline.train.visual")
    result = CliRunner().invoke(main, ["finetune-visual", *args])
    assert result.exit_code == 0, result.output
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from epoch")]
    assert resumed == ["resuming from epoch 2 batch 0 (of 1 epochs)"], resumed
    assert (tmp_path / "visual/model.pt").read_bytes() == model

    # so does a changed threshold strategy (they are chosen after training): the same weights, fixed 0.5
    caplog.clear()
    selection = "selection:\n  mode: holdout\n  share: 0.2\n  seed: 0\n"
    assert selection in params.read_text()
    params.write_text(params.read_text().replace(selection, selection + "  au_thresholds: fixed\n"))
    result = CliRunner().invoke(main, ["finetune-visual", *args])
    assert result.exit_code == 0, result.output
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from epoch")]
    assert resumed == ["resuming from epoch 2 batch 0 (of 1 epochs)"], resumed
    republished = torch.load(tmp_path / "visual/model.pt", weights_only=True)
    assert republished["au_thresholds"]["values"] == [0.5] * 12 and republished["au_thresholds"]["strategy"] == "fixed"
    assert read_metadata(onnx)["au_thresholds"] == republished["au_thresholds"]
