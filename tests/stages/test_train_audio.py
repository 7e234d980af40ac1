"""``mmaffect train-audio`` on four tiny videos (one late, one silent) and a hand-made visual store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _audio_media import build_audio_dataset
from click.testing import CliRunner

from stages.cli import main
from stages.train_audio import command

PARAMS = """\
train_audio:
  audio: {context_s: 0.2}
  tdnn: {channels: [16, 16, 32], kernel_sizes: [5, 3, 1], dilations: [1, 2, 1], embedding_dim: 512, dropout: 0.0}
  fusion: {hidden: 32, dropout: 0.0}
  epochs: 2
  segment_frames: 2
  batch_segments: 16
  lr: 0.001
  seed: 0
selection:
  mode: holdout
  share: 0.2
  seed: 0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("train_audio")
    prepared, store = build_audio_dataset(base / "data", n_frames=48)
    params = base / "params.yaml"
    params.write_text(PARAMS)
    return {"base": base, "prepared": prepared, "store": store, "params": params}


def _args(data: dict[str, Path], out: str = "audio", params: Path | None = None) -> list[str]:
    base = data["base"]
    return [str(data["prepared"]), str(data["store"]), str(base / out), str(base / "metrics" / f"{out}.json"),
            "--params", str(params or data["params"]), "--device", "cpu", "--work-dir", str(base / "work" / out)]


def test_writes_model_onnx_and_metrics(data: dict[str, Path]) -> None:
    result = CliRunner().invoke(command, _args(data))
    assert result.exit_code == 0, result.output
    out = data["base"] / "audio"
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "tdnn.onnx"]
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert set(ckpt) == {"tdnn_arch", "tdnn", "fusion_arch", "fusion", "audio_config"}
    metrics = json.loads((data["base"] / "metrics" / "audio.json").read_text())
    assert {"validation", "visual_only", "selection"} <= set(metrics) and metrics["epochs"] == 2
    assert 0.0 <= metrics["validation"]["face_frames"]["expr"]["score"] <= 1.0
    assert metrics["selection"]["mode"] == "holdout" and metrics["selection"]["subjects"]["au"] == ["v0"]
    assert json.loads(result.output[result.output.index("{"):]) == metrics


def test_rerun_resumes_from_the_work_dir(data: dict[str, Path]) -> None:
    first = CliRunner().invoke(command, _args(data, "again"))
    assert first.exit_code == 0, first.output
    state = torch.load(data["base"] / "work" / "again" / "state.pt", weights_only=True)
    assert state["epoch"] == 2
    metrics = json.loads((data["base"] / "metrics" / "again.json").read_text())
    (data["base"] / "metrics" / "again.json").unlink()
    second = CliRunner().invoke(command, _args(data, "again"))   # nothing left to train: republishes
    assert second.exit_code == 0, second.output
    assert json.loads((data["base"] / "metrics" / "again.json").read_text()) == metrics


def test_registered_with_help(data: dict[str, Path]) -> None:
    result = CliRunner().invoke(main, ["train-audio", "--help"])
    assert result.exit_code == 0
    assert "tdnn.onnx" in result.output and "visual_only" in result.output


def test_bad_params_are_a_usage_error(data: dict[str, Path]) -> None:
    params = data["base"] / "bad.yaml"
    params.write_text(PARAMS.replace("epochs: 2", "epochs: 2\n  epoch: 3"))
    result = CliRunner().invoke(command, _args(data, "bad", params))
    assert result.exit_code == 2 and "epoch" in result.output


def test_missing_store_entry_exits_with_a_message(data: dict[str, Path], tmp_path: Path) -> None:
    prepared, store = build_audio_dataset(tmp_path / "d", n_frames=24)
    import shutil

    shutil.rmtree(store / "v0")
    args = [str(prepared), str(store), str(tmp_path / "out"), str(tmp_path / "m.json"),
            "--params", str(data["params"]), "--device", "cpu", "--work-dir", str(tmp_path / "w")]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1 and "'v0'" in result.output
    assert not (tmp_path / "out").exists()
