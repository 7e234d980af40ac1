"""``mmaffect train-sequence`` through click: params section in, model, ONNX and metrics out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.fsio import OUTPUT_MARKER
from pipeline.train.sequence_synth import SyntheticCacheConfig, write_synthetic_cache
from stages.cli import main

PARAMS = {
    "modalities": "both", "window": 12, "stride": 6, "layers": 1, "heads": 2, "d_model": 16, "ff_mult": 2,
    "dropout": 0.0, "input_projection": True, "positional": "learned", "epochs": 2, "batch_size": 8,
    "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "max_grad_norm": None, "focal_gamma": 2.0,
    "pos_weight_cap": 10.0, "alternation": "batch", "sources": ["affwild2"], "seed": 0,
}

SELECTION = {"mode": "holdout", "share": 0.2, "seed": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    manifest, _, _ = write_synthetic_cache(root, SyntheticCacheConfig(n_videos=3, min_frames=30, max_frames=40))
    (root / "prepared").mkdir()
    manifest.rename(root / "prepared" / "manifest.json")
    return root


def write_params(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump({"train_sequence": {**PARAMS, **overrides}, "selection": SELECTION}))
    return path


def invoke(cache: Path, tmp_path: Path, params: Path):
    args = ["train-sequence", str(cache / "prepared"), str(cache / "visual.zarr"), str(cache / "audio.zarr"),
            str(tmp_path / "sequence"), str(tmp_path / "metrics" / "sequence.json"),
            "--params", str(params), "--device", "cpu", "--work-dir", str(tmp_path / "work")]
    return CliRunner().invoke(main, args)


def test_train_sequence_writes_model_onnx_and_metrics(cache: Path, tmp_path: Path) -> None:
    result = invoke(cache, tmp_path, write_params(tmp_path / "params.yaml"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sequence").iterdir()) == [OUTPUT_MARKER, "model.pt", "sequence.onnx"]
    metrics = json.loads((tmp_path / "metrics" / "sequence.json").read_text())
    assert set(metrics) == {"validation", "selection", "epochs", "best_epoch", "au_thresholds"}
    assert set(metrics["validation"]) == {"face_frames", "all_frames"}
    assert set(metrics["validation"]["face_frames"]["au"]) == {"f1", "acc", "score"}
    assert json.loads(result.output) == metrics
    assert (tmp_path / "work" / "state.pt").is_file()


def test_one_frame_windows_train_a_model_without_temporal_context(cache: Path, tmp_path: Path) -> None:
    result = invoke(cache, tmp_path, write_params(tmp_path / "params.yaml", window=1))
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "sequence" / "model.pt", weights_only=True)["window"] == 1
    result = invoke(cache, tmp_path, write_params(tmp_path / "params.yaml", window=0))
    assert result.exit_code == 2 and "train_sequence.window" in result.output


def test_bad_params_are_a_usage_error(cache: Path, tmp_path: Path) -> None:
    result = invoke(cache, tmp_path, write_params(tmp_path / "params.yaml", d_model=15))
    assert result.exit_code == 2 and "not divisible by heads" in result.output
    result = invoke(cache, tmp_path, write_params(tmp_path / "params.yaml", windw=3))
    assert result.exit_code == 2 and "windw" in result.output
    assert not (tmp_path / "sequence").exists()


def test_missing_store_entry_is_a_one_line_error(cache: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    args = ["train-sequence", str(cache / "prepared"), str(empty), str(cache / "audio.zarr"),
            str(tmp_path / "sequence"), str(tmp_path / "m.json"), "--params", str(write_params(tmp_path / "p.yaml"))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "empty.zarr" in result.output and "Traceback" not in result.output


def test_help_names_inputs_and_outputs() -> None:
    result = CliRunner().invoke(main, ["train-sequence", "--help"])
    assert result.exit_code == 0
    for word in ("VISUAL_ZARR", "AUDIO_ZARR", "model.pt", "sequence.onnx", "train_sequence"):
        assert word in result.output
