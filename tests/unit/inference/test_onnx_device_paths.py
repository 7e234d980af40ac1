"""The GPU inference paths of the visual model: I/O binding and the float16 copy of ``visual.onnx``.

On the CPU the I/O-binding path must give exactly what ``session.run`` gives, and the float16 copy
must pass the checker and stay close to float32; the ``cuda`` tests (run by .ci/gpu_check.sh)
check the same on onnxruntime's CUDA provider.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from _visual_models import write_visual_models
from pipeline.model_files.onnx_export import ParityError, make_session, read_metadata
from pipeline.model_files.float16 import convert_float16, float16_path
from pipeline.inference.binding import BoundRunner, session_device
from pipeline.inference.visual import OUTPUT_NAMES, VisualEmbedder
from pipeline.models.preprocess import to_model_input
from stages.cli import main


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``visual/model.pt`` of a seeded iresnet18 at width 1/16, its ``visual.onnx`` and ``visual.fp16.onnx``."""
    root = write_visual_models(tmp_path_factory.mktemp("device-paths"))
    convert_float16(root / "onnx" / "visual.onnx", float16_path(root / "onnx" / "visual.onnx"))
    return root


def _images(n: int, seed: int = 0) -> np.ndarray:
    crops = np.random.default_rng(seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)
    return to_model_input(crops).numpy()


# -- I/O binding -------------------------------------------------------------------------------------

def test_io_binding_on_the_cpu_gives_what_session_run_gives(models: Path) -> None:
    images = _images(5)
    plain = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu", threads=1, io_binding=False)(images)
    bound = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu", threads=1, io_binding=True)(images)
    for name in OUTPUT_NAMES:
        assert bound[name].dtype == np.float32
        np.testing.assert_array_equal(bound[name], plain[name])


def test_bound_runner_takes_a_torch_tensor_in_place_and_refuses_a_wrong_one(models: Path) -> None:
    session = make_session(models / "onnx" / "visual.onnx", "cpu", threads=1)
    assert session_device(session) == "cpu"
    run = BoundRunner(session, "image", OUTPUT_NAMES)
    images = _images(3, seed=1)
    from_tensor = run(torch.from_numpy(images))
    for ours, theirs in zip(from_tensor, session.run(list(OUTPUT_NAMES), {"image": images})):
        np.testing.assert_array_equal(ours, theirs)
    on_device = run.run_on_device(images)
    assert [value.shape() for value in on_device] == [[3, 512], [3, 12], [3, 7], [3, 2]]
    with pytest.raises(ValueError, match="contiguous float32, got torch.float64"):
        run(torch.from_numpy(images).double())
    with pytest.raises(ValueError, match="device must be one of"):
        BoundRunner(session, "image", OUTPUT_NAMES, device="tpu")


# -- the float16 copy ------------------------------------------------------------------------------------

def test_float16_copy_keeps_float32_edges_and_the_metadata(models: Path) -> None:
    path = float16_path(models / "onnx" / "visual.onnx")
    assert path.name == "visual.fp16.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    float32 = onnx.TensorProto.FLOAT
    # the image in; embedding, au_logits, expr_logits and va_pred out: all stay float32
    assert [v.type.tensor_type.elem_type for v in (*proto.graph.input, *proto.graph.output)] == [float32] * 5
    weights = [t for t in proto.graph.initializer if t.dims and len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    meta = read_metadata(path)
    assert meta["float16"]["from"] == "visual.onnx" and meta["arch"] == read_metadata(
        models / "onnx" / "visual.onnx")["arch"]
    assert path.stat().st_size < 0.6 * (models / "onnx" / "visual.onnx").stat().st_size


def test_float16_embeddings_are_close_to_float32_on_the_cpu(models: Path, tmp_path: Path) -> None:
    report = convert_float16(models / "onnx" / "visual.onnx", tmp_path / "again.fp16.onnx")
    assert report["cpu_check"]["ran"], report["cpu_check"]
    assert max(report["cpu_check"]["max_rel_diff"].values()) < 1e-2
    images = _images(6, seed=2)
    full = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu", threads=1)(images)
    half = VisualEmbedder.from_onnx(float16_path(models / "onnx" / "visual.onnx"), "cpu", threads=1)(images)
    a, b = full["embedding"], half["embedding"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
    assert not np.array_equal(a, b)   # it is another computation, not the same file


def test_float16_copy_is_refused_when_it_drifts_too_far(models: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict.fp16.onnx"
    with pytest.raises(ParityError, match="strict.fp16.onnx: output .* differs from .*visual.onnx"):
        convert_float16(models / "onnx" / "visual.onnx", out, rtol=1e-9)
    assert not out.exists()


def test_export_onnx_fp16_option_writes_the_copy_beside(models: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx" / "visual.onnx"
    result = CliRunner().invoke(main, ["export-onnx", str(models / "visual" / "model.pt"), str(out), "--fp16",
                                       "--params", str(_export_params(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "float16 copy" in result.output and (tmp_path / "onnx" / "visual.fp16.onnx").is_file()
    # the float32 model is the one written without the option
    assert read_metadata(out)["checkpoint_sha256"] == read_metadata(models / "onnx" / "visual.onnx")[
        "checkpoint_sha256"] and "float16" not in read_metadata(out)


def _export_params(directory: Path) -> Path:
    path = directory / "params.yaml"
    path.write_text(json.dumps({"export_onnx": {"opset": 17, "parity_rtol": 1e-4, "example_batch": 2}}))
    return path


# -- on a GPU ----------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_provider_with_io_binding_agrees_with_the_cpu(models: Path) -> None:
    images = _images(8, seed=3)
    cpu = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu")(images)
    session = make_session(models / "onnx" / "visual.onnx", "cuda")
    assert session_device(session) == "cuda"
    run = BoundRunner(session, "image", OUTPUT_NAMES)
    for tensor_input in (images, torch.from_numpy(images).cuda()):
        for name, value in zip(OUTPUT_NAMES, run(tensor_input)):
            np.testing.assert_allclose(value, cpu[name], rtol=1e-3, atol=1e-3)
    half = VisualEmbedder.from_onnx(float16_path(models / "onnx" / "visual.onnx"), "cuda")(images)
    a, b = cpu["embedding"], half["embedding"]
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.999
