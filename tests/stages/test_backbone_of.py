"""``mmaffect backbone-of``: a fine-tuned model's backbone, published as pretrain-face publishes one, which
finetune-visual then starts from."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from _finetune_params import write_params
from pipeline.model_files.backbone import publish_backbone
from pipeline.model_files.visual import build_from_checkpoint, save_checkpoint
from pipeline.models.multitask import build_model
from stages.cli import main

ARCH = {"backbone": "iresnet18", "width_mult": 0.0625, "dropout": 0.0}   # the tiny params' model


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "visual" / "model.pt"
    path.parent.mkdir()
    torch.manual_seed(3)
    save_checkpoint(path, build_model(ARCH), ARCH, {"epoch": 4})
    return path


def test_writes_the_backbone_as_pretrain_face_does(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = tmp_path / "controls"
    result = CliRunner().invoke(main, ["backbone-of", str(model), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".mmaffect-output", "backbone.json", "backbone.pth"]
    state = torch.load(out / "backbone.pth", map_location="cpu", weights_only=True)
    backbone = build_from_checkpoint(torch.load(model, map_location="cpu", weights_only=True)).backbone
    assert state.keys() == backbone.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    record = json.loads((out / "backbone.json").read_text())
    publish_backbone(backbone, {"backbone": "iresnet18", "width_mult": 0.0625}, {"epoch": 1, "init": None,
                                                                                  "margin": "cosface"},
                     tmp_path / "pretrain")
    assert record.keys() == json.loads((tmp_path / "pretrain" / "backbone.json").read_text()).keys()
    assert record["backbone"] == "iresnet18" and record["width_mult"] == 0.0625
    assert record["epoch"] == 4 and record["init"] == str(model)


def test_finetune_visual_starts_from_it(tiny_prepared: Path, tiny_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "controls"
    assert CliRunner().invoke(main, ["backbone-of", str(_model(tmp_path)), str(out)]).exit_code == 0
    params = write_params(tmp_path, epochs=1)
    params.write_text(params.read_text().replace("backbone_init: random", "backbone_init: pretrained"))
    result = CliRunner().invoke(main, [
        "finetune-visual", str(tiny_prepared), str(tiny_frames), str(tmp_path / "tuned"),
        str(tmp_path / "metrics.json"), "--params", str(params), "--pretrained", str(out / "backbone.pth"),
        "--device", "cpu", "--work-dir", str(tmp_path / "work"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tuned" / "model.pt").is_file()


def test_a_file_that_is_not_a_visual_model_is_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["backbone-of", str(tmp_path / "none.pt"), str(tmp_path / "out")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert missing.output.startswith("Error: ") and str(tmp_path / "none.pt") in missing.output
    assert missing.output.count("\n") == 1
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    result = CliRunner().invoke(main, ["backbone-of", str(other), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {other}: ")
    assert result.output.count("\n") == 1 and not (tmp_path / "out").exists()
