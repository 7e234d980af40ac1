"""The one checkpoint loader: weights_only, errors naming the file, no non-finite tensor gets through."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pipeline.evaluate.scoring import load_fusion, load_sequence_runner
from pipeline.model_files.backbone import load_backbone_state
from pipeline.model_files.checkpoint import CheckpointError, first_non_finite, load_checkpoint, save_checkpoint
from pipeline.model_files.visual import checkpoint_dict, export_visual
from pipeline.models.multitask import build_model
from pipeline.train.loop_state import LoopState
from stages.cli import main

TINY = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.0}


def test_round_trip_and_missing_file(tmp_path: Path) -> None:
    state = {"epoch": 3, "model": {"w": torch.ones(2)}, "rng": torch.ByteTensor([1, 2])}
    save_checkpoint(tmp_path / "good.pt", state)
    loaded = load_checkpoint(tmp_path / "good.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert load_checkpoint(tmp_path / "none.pt", missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match=r"audio model checkpoint not found: .*none.pt \(run train-audio first\)"):
        load_checkpoint(tmp_path / "none.pt", "audio model checkpoint", missing_hint="run train-audio first")


def test_unreadable_or_foreign_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: unreadable checkpoint .*delete it to start over") as info:
        load_checkpoint(junk)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="tensor.pt: checkpoint holds a Tensor, expected a dict"):
        load_checkpoint(tmp_path / "tensor.pt")
    # weights_only: a pickled arbitrary object is refused, not executed
    torch.save({"obj": datetime.date(2020, 1, 1)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match=r"pickled.pt: unreadable checkpoint \(UnpicklingError: Unsupported global"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_non_finite_tensor_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    state = {"arch": TINY, "state_dict": {"fc.weight": torch.ones(2, 2), "fc.bias": torch.tensor([0.0, float("nan")])}}
    save_checkpoint(tmp_path / "model.pt", state)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "model.pt", "visual model checkpoint")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'model.pt'}: visual model checkpoint holds NaN or Inf in tensor 'state_dict.fc.bias'")
    assert "lower lr" in message and "\n" not in message


def test_first_non_finite_walks_nested_containers_in_order() -> None:
    optimizer_state = {"state": {0: {"momentum_buffer": torch.tensor([1.0, float("inf")])}}, "param_groups": [{"lr": 0.1}]}
    assert first_non_finite({"model": {"w": torch.zeros(1)}, "optimizer": optimizer_state}) == "optimizer.state.0.momentum_buffer"
    assert first_non_finite({"history": [{"x": torch.zeros(1)}, {"x": torch.tensor([float("nan")])}]}) == "history.1.x"
    assert first_non_finite({"counts": torch.tensor([1, 2]), "mask": torch.tensor([True])}) is None


def test_resume_refuses_a_diverged_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = LoopState(tmp_path / "state.pt", {"config": {}})
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    loop.save(model, optimizer)
    with pytest.raises(CheckpointError, match=r"state.pt: training state holds NaN or Inf in tensor 'model.weight'"):
        LoopState.resume(tmp_path / "state.pt", {"config": {}}, model, optimizer)


def _nan_visual_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    torch.save(checkpoint_dict(model, TINY), path)


def test_no_stage_consumes_a_non_finite_checkpoint(tmp_path: Path) -> None:
    _nan_visual_checkpoint(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt: visual model checkpoint holds NaN"):
        export_visual(tmp_path / "model.pt", tmp_path / "visual.onnx")
    assert not (tmp_path / "visual.onnx").exists()
    params = tmp_path / "params.yaml"
    params.write_text("export_onnx: {opset: 17, parity_rtol: 1.0e-4, example_batch: 2}\n")
    result = CliRunner().invoke(main, ["export-onnx", str(tmp_path / "model.pt"), str(tmp_path / "visual.onnx"),
                                       "--params", str(params)])
    assert result.exit_code == 1 and "holds NaN or Inf in tensor 'state_dict." in result.output
    assert "Traceback" not in result.output

    save_checkpoint(tmp_path / "audio.pt", {"fusion": {"w": torch.tensor([float("inf")])}})
    with pytest.raises(CheckpointError, match="audio.pt: audio model checkpoint holds NaN or Inf in tensor 'fusion.w'"):
        load_fusion(tmp_path / "audio.pt", torch.device("cpu"))
    save_checkpoint(tmp_path / "sequence.pt", {"state_dict": {"w": torch.tensor([float("nan")])}})
    with pytest.raises(CheckpointError, match="sequence.pt: sequence model checkpoint holds NaN"):
        load_sequence_runner(tmp_path / "sequence.pt", "cpu", torch.device("cpu"))

    backbone = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in build_model(TINY).backbone.state_dict().items()}
    torch.save(backbone, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="backbone.pth: pretrained backbone checkpoint holds NaN"):
        load_backbone_state(build_model(TINY).backbone, tmp_path / "backbone.pth")
