"""``mmaffect export-onnx`` through click: publishes a checked model, reports errors in one line."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from click.testing import CliRunner

from pipeline.model_files.onnx_export import read_metadata
from pipeline.model_files.visual import checkpoint_dict
from pipeline.models.multitask import build_model
from stages.cli import main

ARCH = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.0}


def _params(tmp_path: Path, **section: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"export_onnx": {"opset": 17, "parity_rtol": 1e-4, "example_batch": 2, **section}}))
    return path


def test_export_onnx_writes_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(checkpoint_dict(build_model(ARCH).eval(), ARCH), tmp_path / "model.pt")
    out = tmp_path / "onnx" / "visual.onnx"
    result = CliRunner().invoke(main, ["export-onnx", str(tmp_path / "model.pt"), str(out), "--params", str(_params(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "max abs diff vs torch" in result.output
    assert read_metadata(out)["arch"] == ARCH


def test_export_onnx_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["export-onnx", str(tmp_path / "none.pt"), str(tmp_path / "v.onnx"), "--params", str(_params(tmp_path))])
    assert missing.exit_code == 1 and "none.pt" in missing.output and "Traceback" not in missing.output
    bad = runner.invoke(main, ["export-onnx", str(tmp_path / "none.pt"), str(tmp_path / "v.onnx"), "--params", str(_params(tmp_path, opset=5))])
    assert bad.exit_code == 2 and "opset" in bad.output
    unknown = runner.invoke(main, ["export-onnx", str(tmp_path / "none.pt"), str(tmp_path / "v.onnx"), "--params", str(_params(tmp_path, fp16=True))])
    assert unknown.exit_code == 2 and "fp16" in unknown.output
    assert not (tmp_path / "v.onnx").exists()


def test_export_onnx_help_names_inputs_and_outputs() -> None:
    result = CliRunner().invoke(main, ["export-onnx", "--help"])
    assert result.exit_code == 0
    assert "MODEL_PT" in result.output and "embedding" in result.output and "export_onnx" in result.output


def test_int8_option_adds_the_int8_model_and_leaves_the_float_one_as_it_was(tmp_path: Path, tiny_frames: Path) -> None:
    torch.manual_seed(0)
    torch.save(checkpoint_dict(build_model(ARCH).eval(), ARCH), tmp_path / "model.pt")
    args = [str(tmp_path / "model.pt"), "--params", str(_params(tmp_path, int8_crops=8))]
    plain = CliRunner().invoke(main, ["export-onnx", args[0], str(tmp_path / "a" / "visual.onnx"), *args[1:]])
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "a" / "visual.int8.onnx").exists()
    out = tmp_path / "b" / "visual.onnx"
    result = CliRunner().invoke(main, ["export-onnx", args[0], str(out), *args[1:], "--int8-calibration",
                                       str(tiny_frames)])
    assert result.exit_code == 0, result.output
    assert "on 8 crops" in result.output and "max abs diff vs float32" in result.output
    assert (tmp_path / "a" / "visual.onnx").read_bytes() == out.read_bytes()
    meta = read_metadata(out.with_name("visual.int8.onnx"))
    assert meta["arch"] == ARCH and meta["quantization"]["calibration"]["n_crops"] == 8
