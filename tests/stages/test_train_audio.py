"""``mmaffect train-audio`` on four tiny videos (one late, one silent) and a hand-made visual store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _audio_media import build_audio_dataset
from click.testing import CliRunner

from pipeline.audio.windows import video_audio
from pipeline.data.manifest import read_manifest
from pipeline.fsio import OUTPUT_MARKER, file_sha256
from pipeline.inference.audio import AudioEmbedder
from pipeline.model_files.audio import read_audio_config as load_audio_config
from pipeline.model_files.onnx_export import read_metadata
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


def _params(data: dict[str, Path], name: str, extra: str) -> Path:
    """The test params with ``extra`` lines added to the train_audio section, as ``name``.yaml."""
    path = data["base"] / f"{name}.yaml"
    path.write_text(PARAMS.replace("  seed: 0\nselection:", "  seed: 0\n  " + extra + "selection:"))
    return path


def _args(data: dict[str, Path], out: str = "audio", params: Path | None = None) -> list[str]:
    base = data["base"]
    return [str(data["prepared"]), str(data["store"]), str(base / out), str(base / "metrics" / f"{out}.json"),
            "--params", str(params or data["params"]), "--device", "cpu", "--work-dir", str(base / "work" / out)]


def test_writes_model_onnx_and_metrics(data: dict[str, Path]) -> None:
    result = CliRunner().invoke(command, _args(data))
    assert result.exit_code == 0, result.output
    out = data["base"] / "audio"
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "model.pt", "tdnn.int8.onnx", "tdnn.onnx"]
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert set(ckpt) == {"tdnn_arch", "tdnn", "fusion_arch", "fusion", "audio_config", "au_thresholds"}
    metrics = json.loads((data["base"] / "metrics" / "audio.json").read_text())
    assert {"validation", "visual_only", "selection"} <= set(metrics) and metrics["epochs"] == 2
    assert 0.0 <= metrics["validation"]["face_frames"]["expr"]["score"] <= 1.0
    assert metrics["selection"]["mode"] == "holdout" and metrics["selection"]["subjects"]["au"] == ["v0"]
    assert json.loads(result.output[result.output.index("{"):]) == metrics


def test_int8_tdnn_records_its_calibration_and_embeds_close_to_float32(data: dict[str, Path]) -> None:
    result = CliRunner().invoke(command, _args(data, "int8", _params(data, "int8", "int8_windows: 40\n")))
    assert result.exit_code == 0, result.output
    out = data["base"] / "int8"
    float_meta, meta = read_metadata(out / "tdnn.onnx"), read_metadata(out / "tdnn.int8.onnx")
    assert {key: meta[key] for key in float_meta} == float_meta      # audio config and window length kept
    quantization = meta["quantization"]
    assert quantization["float_model_sha256"] == file_sha256(out / "tdnn.onnx")
    calibration = quantization["calibration"]
    manifest = read_manifest(data["prepared"] / "manifest.json")
    train_videos = {r.video for r in manifest.subjects if r.au_split == "train" or r.expr_split == "train"}
    assert calibration["n_windows"] == len(calibration["windows"]) == 40
    assert set(calibration["videos"]) <= train_videos and calibration["seed"] == 0
    ops = [node.op_type for node in onnx.load(str(out / "tdnn.int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops and ops.count("Gemm") == 1    # the projection stays float32
    record = next(r for r in manifest.subjects if r.video_path and r.video in calibration["videos"])
    audio = video_audio(record.video_path, record.n_frames, record.fps, load_audio_config(out / "tdnn.onnx"))
    embeddings = {path: AudioEmbedder.from_file(out / path, "cpu", threads=1).embed(audio, batch_size=16)
                  for path in ("tdnn.onnx", "tdnn.int8.onnx")}
    a, b = (e[audio.present].astype(np.float64) for e in embeddings.values())
    assert len(a) and not np.array_equal(a, b)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # a two-epoch TDNN on four tiny videos, 40 windows: mean 0.99, min 0.95 measured
    assert cosine.mean() >= 0.98 and cosine.min() >= 0.9, (cosine.mean(), cosine.min())


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
