"""int8 static quantization of the visual model: file, metadata, calibration set, closeness, use by embed-visual."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from _embed_inputs import tiny_visual_onnx
from pipeline.data.frame_store import FrameStore
from pipeline.export import make_session, read_metadata
from pipeline.fsio import file_sha256
from pipeline.models.preprocess import to_model_input
from pipeline.quantize import CalibrationConfig, calibration_crops, int8_path, quantize_visual
from pipeline.store import EmbeddingStore
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
    assert [o.name for o in graph.output] == ["embedding", "au_logits", "expr_logits"]


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
    with pytest.raises(ValueError, match="calibration crops"):
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
    assert set(report["max_abs_diff"]) == {"embedding", "au_logits", "expr_logits"}


def test_embed_visual_takes_the_int8_model(quantized: tuple[Path, dict], tiny_prepared: Path, tiny_frames: Path,
                                           tmp_path: Path) -> None:
    float_path, _ = quantized
    params = tmp_path / "params.yaml"
    params.write_text("embed_visual:\n  chunk_frames: 8\n  sources: [affwild2]\n")
    stores = {}
    for label, model in (("float", float_path), ("int8", int8_path(float_path))):
        out = tmp_path / f"{label}.zarr"
        result = CliRunner().invoke(embed_visual, [
            str(tiny_prepared), str(tiny_frames), str(model), str(out), "--params", str(params), "--device", "cpu",
            "--no-processes", "--batch-size", "16", "--work-dir", str(tmp_path / label), "--no-progress"])
        assert result.exit_code == 0, result.output
        stores[label] = EmbeddingStore.open_read(out)
    assert stores["int8"].attrs["model"]["quantization"]["format"] == "QDQ"
    assert stores["int8"].fingerprint != stores["float"].fingerprint
    key = stores["float"].keys()[0]
    a, b = stores["float"].read(key), stores["int8"].read(key)
    np.testing.assert_array_equal(a["face_present"], b["face_present"])
    faces = a["face_present"]
    assert faces.any() and _cosines(a["embedding"][faces], b["embedding"][faces]).min() >= 0.95
