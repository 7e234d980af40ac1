"""The visual embedder: visual.onnx and the finetune-visual checkpoint give the same outputs; batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _visual_models import write_visual_models
from pipeline.inference.visual import VisualEmbedder, embed_batches
from pipeline.model_files.onnx_export import export_onnx
from pipeline.models.preprocess import to_model_input


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``visual/model.pt`` of a seeded iresnet18 at width 1/16 and its ``onnx/visual.onnx``."""
    return write_visual_models(tmp_path_factory.mktemp("visual-embedder"))


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def test_onnx_and_torch_agree(models: Path) -> None:
    images = to_model_input(_crops(5)).numpy()
    from_onnx = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu", threads=1)(images)
    from_torch = VisualEmbedder.from_checkpoint(models / "visual" / "model.pt", "cpu")(images)
    assert {name: value.shape for name, value in from_onnx.items()} == {
        "embedding": (5, 512), "au_logits": (5, 12), "expr_logits": (5, 7), "va_pred": (5, 2)}
    for name, value in from_onnx.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, from_torch[name], rtol=1e-4, atol=1e-4)


def test_embed_batches_stacks_in_order_and_handles_no_batches(models: Path) -> None:
    embedder = VisualEmbedder.from_onnx(models / "onnx" / "visual.onnx", "cpu", threads=1)
    crops = _crops(7, seed=1)
    outputs, timing = embed_batches(embedder, lambda index: crops[index], [np.arange(0, 3), np.arange(3, 7)])
    whole = embedder(to_model_input(crops).numpy())
    for name, value in outputs.items():
        np.testing.assert_allclose(value, whole[name], rtol=1e-5, atol=1e-5)
    assert set(timing) == {"model_seconds", "decode_wait_seconds"}
    empty, _ = embed_batches(embedder, lambda index: crops[index], [])
    assert {name: value.shape for name, value in empty.items()} == {
        "embedding": (0, 512), "au_logits": (0, 12), "expr_logits": (0, 7), "va_pred": (0, 2)}


def test_a_wrong_output_shape_names_the_model() -> None:
    embedder = VisualEmbedder(lambda images: {"embedding": np.zeros((len(images), 256), np.float32),
                                              "au_logits": np.zeros((len(images), 12), np.float32),
                                              "expr_logits": np.zeros((len(images), 7), np.float32)}, "odd.onnx")
    with pytest.raises(ValueError, match=r"odd\.onnx: output 'embedding' has shape \(2, 256\)"):
        embedder(np.zeros((2, 3, 112, 112), np.float32))


def test_a_model_exported_before_va_pred_is_refused_naming_the_file(tmp_path: Path) -> None:
    class BeforeVA(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            pooled = image.mean(dim=(2, 3))
            return pooled.repeat(1, 171)[:, :512], pooled.repeat(1, 4), pooled.repeat(1, 3)[:, :7]

    names = ("image", "embedding", "au_logits", "expr_logits")
    old = export_onnx(BeforeVA(), (torch.zeros(2, 3, 112, 112),), tmp_path / "old.onnx", names[:1], names[1:],
                      {name: {0: "batch"} for name in names}, {"model": "visual"})
    with pytest.raises(ValueError, match=r"old\.onnx: the model has no output va_pred; export it again"):
        VisualEmbedder.from_onnx(tmp_path / "old.onnx", "cpu", threads=1)
    assert old["max_abs_diff"]   # the stand-in itself exported and passed its parity check


def test_a_missing_checkpoint_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.pt \(run finetune-visual first\)"):
        VisualEmbedder.from_checkpoint(tmp_path / "model.pt", "cpu")
