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
from pipeline.audio.windows import video_audio_windows
from pipeline.data.manifest import read_manifest
from pipeline.models.fusion import load_tdnn
from pipeline.store import EmbeddingStore
from pipeline.checkpoint import load_checkpoint
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


def test_help_names_inputs_and_outputs() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for word in ("AUDIO_MODEL_DIR", "OUT_ZARR", "tdnn.onnx", "--scheduler", "--work-dir", "embed_audio"):
        assert word in result.output
