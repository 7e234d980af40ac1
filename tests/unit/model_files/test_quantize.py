"""int8 static quantization of the visual model: file, metadata, calibration set, closeness, embed-visual's precision."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import zarr
from click.testing import CliRunner

from _embed_inputs import tiny_visual_onnx
from pipeline.config import ConfigError
from pipeline.storage.frame_store import FrameStore
from pipeline.model_files.onnx_export import make_session, read_metadata
from pipeline.fsio import file_sha256
from pipeline.models.preprocess import to_model_input
from pipeline.audio.windows import VideoAudio
from pipeline.model_files.audio import calibration_windows
from pipeline.model_files.int8 import CalibrationConfig, QuantSettings, int8_path
from pipeline.model_files.visual import calibration_crops, quantize_visual, write_float16
from pipeline.storage.embedding_store import EmbeddingStore
from stages.embed_visual import command as embed_visual


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def quantized(tiny_frames: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny float model, its int8 model beside it, and the quantization report."""
    float_path = tiny_visual_onnx(tmp_path_factory.mktemp("int8") / "visual.onnx")
    before = file_sha256(float_path)
    report = quantize_visual(float_path, tiny_frames, config=CalibrationConfig(n_crops=24, batch_size=8))
    assert file_sha256(float_path) == before  # the float model is only read
    return float_path, report


def test_int8_model_sits_next_to_the_float_one_as_qdq_with_per_channel_weights(quantized: tuple[Path, dict]) -> None:
    float_path, _ = quantized
    path = int8_path(float_path)
    assert path.name == "visual.int8.onnx" and path.parent == float_path.parent
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    scales = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    weight_scales = [scales[node.input[1]] for node in graph.node
                     if node.op_type == "DequantizeLinear" and node.input[0] in scales
                     and scales[node.input[0]].dtype == np.int8]
    assert weight_scales and all(s.size > 1 for s in weight_scales)  # one scale per output channel
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["embedding", "au_logits", "expr_logits", "va_pred"]


def test_metadata_keeps_the_float_models_and_records_the_calibration_set(
    quantized: tuple[Path, dict], tiny_frames: Path
) -> None:
    float_path, report = quantized
    meta = read_metadata(int8_path(float_path))
    float_meta = read_metadata(float_path)
    assert {k: meta[k] for k in float_meta} == float_meta
    q = meta["quantization"]
    assert q["format"] == "QDQ" and q["float_model_sha256"] == file_sha256(float_path)
    calibration = q["calibration"]
    assert calibration["frames_sha256"] == file_sha256(tiny_frames) and calibration["n_crops"] == 24
    crops = [tuple(c) for c in calibration["crops"]]
    assert crops == calibration_crops(tiny_frames, 24, seed=0) and len(set(crops)) == 24
    with FrameStore(tiny_frames) as store:
        assert all(store.face_present(name)[frame] for name, frame in crops)
    assert calibration_crops(tiny_frames, 24, seed=1) != crops
    assert report["calibration"] == calibration


def test_more_crops_than_faces_takes_every_face(tiny_frames: Path) -> None:
    with FrameStore(tiny_frames) as store:
        faces = sum(int(store.face_present(name).sum()) for name in store.names())
    assert len(calibration_crops(tiny_frames, faces + 100, seed=0)) == faces
    with pytest.raises(ConfigError, match="n_crops: must be >= 1, got 0"):
        CalibrationConfig(n_crops=0)


def test_int8_outputs_stay_close_to_float32(quantized: tuple[Path, dict], tiny_frames: Path) -> None:
    float_path, report = quantized
    with FrameStore(tiny_frames) as store:
        name = store.names()[0]
        images = store.read(name, np.flatnonzero(store.face_present(name))[:16])
    feed = {"image": to_model_input(images).numpy()}
    ref = make_session(float_path, "cpu", threads=1).run(None, feed)
    got = make_session(int8_path(float_path), "cpu", threads=1).run(None, feed)
    for r, g in zip(ref, got):
        assert np.isfinite(g).all() and not np.array_equal(r, g)  # really another model
        # a stand-in net with random weights, 24 calibration crops: about 0.98 measured
        assert _cosines(r, g).min() >= 0.95
    assert set(report["max_abs_diff"]) == {"embedding", "au_logits", "expr_logits", "va_pred"}


def _zarr_layout(path: Path) -> dict[str, tuple]:
    """Every array of a Zarr store by relative path: (shape, dtype, chunks)."""
    root = zarr.open_group(str(path), mode="r")
    return {name: (array.shape, str(array.dtype), array.chunks) for name, array in root.arrays()} | {
        f"{group}/{name}": (array.shape, str(array.dtype), array.chunks)
        for group, sub in root.groups() for name, array in sub.arrays()}


def _embed(prepared: Path, frames: Path, model: Path, out: Path, params: Path) -> Any:
    return CliRunner().invoke(embed_visual, [
        str(prepared), str(frames), str(model), str(out), "--params", str(params), "--device", "cpu",
        "--no-processes", "--batch-size", "16", "--work-dir", str(out.with_suffix(".work")), "--no-progress"])


def _embed_at(precisions: tuple[str, ...], prepared: Path, frames: Path, model: Path,
              tmp_path: Path) -> dict[str, EmbeddingStore]:
    """The store ``embed-visual`` writes at each of ``precisions`` (``tmp_path/<precision>.zarr``)."""
    stores = {}
    for precision in precisions:
        params = tmp_path / f"{precision}.yaml"
        params.write_text(f"embed_visual:\n  chunk_frames: 8\n  sources: [affwild2]\n  precision: {precision}\n")
        result = _embed(prepared, frames, model, tmp_path / f"{precision}.zarr", params)
        assert result.exit_code == 0, result.output
        stores[precision] = EmbeddingStore.open_read(tmp_path / f"{precision}.zarr")
    return stores

def test_embed_visual_precision_int8_takes_the_int8_model_into_the_same_layout(
    quantized: tuple[Path, dict], tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    float_path, _ = quantized
    stores = _embed_at(("float32", "int8"), tiny_prepared, tiny_frames, float_path, tmp_path)
    assert stores["int8"].attrs["model"]["quantization"]["format"] == "QDQ"
    assert "quantization" not in stores["float32"].attrs["model"]
    assert stores["int8"].fingerprint != stores["float32"].fingerprint
    # the precision is recorded by the model, not among the params (float32 stores stay as they were)
    assert stores["int8"].attrs["params"] == stores["float32"].attrs["params"] == {"chunk_frames": 8,
                                                                                   "sources": ["affwild2"]}
    assert _zarr_layout(tmp_path / "int8.zarr") == _zarr_layout(tmp_path / "float32.zarr")
    key = stores["float32"].keys()[0]
    a, b = stores["float32"].read(key), stores["int8"].read(key)
    np.testing.assert_array_equal(a["face_present"], b["face_present"])
    faces = a["face_present"]
    assert faces.any() and _cosines(a["embedding"][faces], b["embedding"][faces]).min() >= 0.95


def test_embed_visual_precision_float16_takes_the_float16_copy(
    quantized: tuple[Path, dict], tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    float_path = tmp_path / "onnx" / "visual.onnx"
    float_path.parent.mkdir()
    shutil.copy(quantized[0], float_path)
    write_float16(float_path)
    stores = _embed_at(("float32", "float16"), tiny_prepared, tiny_frames, float_path, tmp_path)
    assert stores["float16"].attrs["model"]["float16"]["from"] == "visual.onnx"
    assert stores["float16"].fingerprint != stores["float32"].fingerprint
    key = stores["float32"].keys()[0]
    a, b = stores["float32"].read(key), stores["float16"].read(key)
    faces = a["face_present"]
    assert faces.any() and _cosines(a["embedding"][faces], b["embedding"][faces]).min() >= 0.99


def test_embed_visual_names_a_missing_int8_model_and_how_to_make_it(
    quantized: tuple[Path, dict], tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "onnx" / "visual.onnx"
    alone.parent.mkdir()
    shutil.copy(quantized[0], alone)
    params = tmp_path / "params.yaml"
    params.write_text("embed_visual:\n  precision: int8\n")
    result = _embed(tiny_prepared, tiny_frames, alone, tmp_path / "out.zarr", params)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(alone.with_name("visual.int8.onnx")) in result.output and "--int8-calibration" in result.output
    assert not (tmp_path / "out.zarr").exists()
    params.write_text("embed_visual:\n  precision: int4\n")
    bad = _embed(tiny_prepared, tiny_frames, alone, tmp_path / "out.zarr", params)
    assert bad.exit_code == 2 and "precision" in bad.output and "int4" in bad.output


def test_settings_are_recorded_and_checked(quantized: tuple[Path, dict]) -> None:
    _, report = quantized
    assert report["weights"] == "int8 per channel" and report["activations"] == "uint8"
    assert report["operators"] == "onnxruntime default" and report["preprocess"] is False
    assert QuantSettings(per_channel=False, activations="int8").record()["weights"] == "int8 per tensor"
    with pytest.raises(ValueError, match="format"):
        QuantSettings(format="QLinear")
    with pytest.raises(ValueError, match="activations"):
        QuantSettings(activations="int4")


def test_calibration_windows_draw_frames_with_audio_only() -> None:
    present = np.zeros(40, bool)
    present[10:30] = True
    audio = VideoAudio(np.ones((64, 400), np.float32), np.arange(0, 400, 10)[:40] % 300, present, 101)
    silent = VideoAudio(np.zeros((64, 0), np.float32), np.zeros(5, np.int64), np.zeros(5, bool), 101)
    picks = calibration_windows({"b": audio, "a": silent}, 8, seed=0)
    assert len(picks) == len(set(picks)) == 8 and all(name == "b" and present[i] for name, i in picks)
    assert calibration_windows({"b": audio}, 8, seed=0) == picks != calibration_windows({"b": audio}, 8, seed=1)
    assert len(calibration_windows({"b": audio}, 100, seed=0)) == 20
    with pytest.raises(ValueError, match="no frame with audio"):
        calibration_windows({"a": silent}, 8, seed=0)
