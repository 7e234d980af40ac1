"""``mmaffect embed-audio`` on a four-video dataset (one without audio) with a tiny stand-in TDNN.

Dask workers run as threads of the test process (``--no-processes``) to keep start-up cheap.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _embed_inputs import build_prepared, tiny_audio_model_dir
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import video_audio, video_audio_windows
from pipeline.data.manifest import read_manifest
from pipeline.model_files.audio import load_tdnn, quantize_tdnn
from pipeline.model_files.checkpoint import load_checkpoint
from pipeline.model_files.int8 import CalibrationConfig
from pipeline.storage.embedding_store import EmbeddingStore
from stages.embed_audio import command

VIDEOS = ["vidA", "vidB", "vidC", "vidD"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("embed_audio")
    prepared, _ = build_prepared(base)
    for backend in ("onnx", "torch"):
        (base / f"{backend}.yaml").write_text(f"embed_audio:\n  chunk_frames: 4\n  backend: {backend}\n")
    return {"base": base, "prepared": prepared, "models": tiny_audio_model_dir(base / "audio")}


def _invoke(inputs: dict[str, Path], out: Path, backend: str = "onnx", prepared: Path | None = None) -> object:
    args = [str(prepared or inputs["prepared"]), str(inputs["models"]), str(out),
            "--params", str(inputs["base"] / f"{backend}.yaml"), "--device", "cpu", "--no-processes",
            "--batch-size", "4", "--work-dir", str(out.parent / "work"), "--no-progress"]
    return CliRunner().invoke(command, args)


@pytest.fixture(scope="module")
def onnx_store(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EmbeddingStore:
    out = tmp_path_factory.mktemp("audio_onnx") / "audio.zarr"
    result = _invoke(inputs, out)
    assert result.exit_code == 0, result.output
    return EmbeddingStore.open_read(out)


def test_one_entry_per_video_matching_the_tdnn(inputs: dict[str, Path], onnx_store: EmbeddingStore) -> None:
    assert onnx_store.keys() == VIDEOS
    assert onnx_store.attrs["params"] == {"chunk_frames": 4, "backend": "onnx"}
    assert onnx_store.attrs["model"]["audio_config"]["n_mels"] == 64
    manifest = read_manifest(inputs["prepared"] / "manifest.json")
    tdnn = load_tdnn(load_checkpoint(inputs["models"] / "model.pt"))
    for video in VIDEOS:
        record = manifest.videos()[video][0]
        entry = onnx_store.read(video)
        assert entry["embedding"].shape == (record.n_frames, 512) and entry["embedding"].dtype == np.float16
        windows = video_audio_windows(record.video_path, record.n_frames, record.fps, AudioConfig())
        np.testing.assert_array_equal(entry["audio_present"], windows.present)
        with torch.no_grad():
            expected = tdnn(torch.from_numpy(windows.mel)).numpy()
        present = windows.present
        np.testing.assert_allclose(entry["embedding"][present], expected[present], rtol=2e-3, atol=2e-3)
        assert not entry["embedding"][~present].any()
    assert onnx_store.entry_attrs("vidC")["subjects"] == ["vidC_left", "vidC_right"]
    assert not onnx_store.read("vidB")["audio_present"].any()  # vidB has no audio stream
    assert onnx_store.read("vidA")["audio_present"].all()


def test_torch_backend_agrees_with_onnx(inputs: dict[str, Path], onnx_store: EmbeddingStore, tmp_path: Path) -> None:
    result = _invoke(inputs, tmp_path / "audio.zarr", backend="torch")
    assert result.exit_code == 0, result.output
    torch_store = EmbeddingStore.open_read(tmp_path / "audio.zarr")
    assert torch_store.keys() == VIDEOS and torch_store.fingerprint != onnx_store.fingerprint
    for video in VIDEOS:
        np.testing.assert_allclose(torch_store.read(video)["embedding"].astype(np.float32),
                                   onnx_store.read(video)["embedding"].astype(np.float32), atol=2e-3)


def test_unreadable_video_fails_by_name_and_others_complete(inputs: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "copy"
    shutil.copytree(inputs["base"] / "affwild2", base / "affwild2")
    shutil.copytree(inputs["prepared"], base / "prepared")
    manifest = (base / "prepared" / "manifest.json")
    manifest.write_text(manifest.read_text().replace(str(inputs["base"] / "affwild2"), str(base / "affwild2")))
    (base / "affwild2" / "videos" / "batch1" / "vidD.mp4").write_bytes(b"not a video")

    out = tmp_path / "audio.zarr"
    result = _invoke(inputs, out, prepared=base / "prepared")
    assert result.exit_code == 1
    assert "vidD" in result.output and "1 failed" in result.output
    assert EmbeddingStore.open_read(tmp_path / "work" / "audio.zarr").keys() == ["vidA", "vidB", "vidC"]
    assert not out.exists()


def test_precision_int8_runs_tdnn_int8_into_the_same_layout(inputs: dict[str, Path], onnx_store: EmbeddingStore,
                                                            tmp_path: Path) -> None:
    models = tmp_path / "audio"
    shutil.copytree(inputs["models"], models)
    params = tmp_path / "int8.yaml"
    params.write_text("embed_audio:\n  chunk_frames: 4\n  backend: onnx\n  precision: int8\n")
    args = [str(inputs["prepared"]), str(models), str(tmp_path / "int8.zarr"), "--params", str(params),
            "--device", "cpu", "--no-processes", "--batch-size", "4", "--work-dir", str(tmp_path / "work"),
            "--no-progress"]
    missing = CliRunner().invoke(command, args)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert str(models / "tdnn.int8.onnx") in missing.output and "train-audio" in missing.output
    manifest = read_manifest(inputs["prepared"] / "manifest.json")
    audios = {video: video_audio(records[0].video_path, records[0].n_frames, records[0].fps, AudioConfig())
              for video, records in manifest.videos().items()}
    quantize_tdnn(models / "tdnn.onnx", audios, config=CalibrationConfig(n_crops=32))
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    store = EmbeddingStore.open_read(tmp_path / "int8.zarr")
    assert store.attrs["model"]["path"] == str(models / "tdnn.int8.onnx")
    assert store.attrs["params"] == onnx_store.attrs["params"] and store.keys() == onnx_store.keys()
    for video in VIDEOS:
        a, b = onnx_store.read(video), store.read(video)
        assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
        np.testing.assert_array_equal(a["audio_present"], b["audio_present"])
        present = a["audio_present"].astype(bool)
        x, y = a["embedding"][present].astype(np.float64), b["embedding"][present].astype(np.float64)
        assert not b["embedding"][~present].any()      # zeros where no audio, as in float32
        if len(x):
            cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            assert cosine.mean() >= 0.95, (video, cosine.mean())


def test_torch_backend_has_no_int8(inputs: dict[str, Path], tmp_path: Path) -> None:
    params = tmp_path / "bad.yaml"
    params.write_text("embed_audio:\n  backend: torch\n  precision: int8\n")
    result = CliRunner().invoke(command, [str(inputs["prepared"]), str(inputs["models"]), str(tmp_path / "o.zarr"),
                                          "--params", str(params), "--work-dir", str(tmp_path / "work"),
                                          "--no-progress"])
    assert result.exit_code == 2 and "float32 only" in result.output


def test_help_names_inputs_and_outputs() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for word in ("AUDIO_MODEL_DIR", "OUT_ZARR", "tdnn.onnx", "--scheduler", "--work-dir", "embed_audio"):
        assert word in result.output
