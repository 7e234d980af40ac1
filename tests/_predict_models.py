"""Tiny ONNX models for the predict tests, exported with the project's helpers and documented I/O names.

``visual.onnx`` (image -> embedding, au_logits, expr_logits, va_pred) from an iresnet18 at width 1/16,
``tdnn.onnx`` (mel -> embedding) with the audio config in its metadata, and ``sequence.onnx``
(features -> au_logits, expr_logits, va_pred) with modalities/window/stride in its metadata. Weights are
random (seeded); the tests check shapes, columns and probability ranges, not accuracy.
:func:`export_pre_va_sequence` writes a sequence model as exported before valence-arousal (no ``va_pred``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.audio.features import AudioConfig
from pipeline.config import to_dict
from pipeline.inference.features import feature_dim
from pipeline.model_files.onnx_export import export_onnx
from pipeline.model_files.visual import export_visual
from pipeline.model_files.visual import checkpoint_dict
from pipeline.models.multitask import build_model
from pipeline.models.sequence import SequenceArch, SequenceModel
from pipeline.models.tdnn import TDNN, TDNNConfig

WINDOW, STRIDE = 8, 4


@dataclass(frozen=True)
class PredictModelPaths:
    """Where the three exported models are."""

    visual: Path
    audio: Path
    sequence: Path


def build_predict_models(root: Path, modalities: str = "both", seed: int = 0) -> PredictModelPaths:
    """Export the three tiny models under ``root/{onnx,audio,sequence}/`` (the pipeline's cache layout)."""
    torch.manual_seed(seed)
    arch = {"backbone": "iresnet18", "width_mult": 0.0625, "dropout": 0.0}
    ckpt = root / "visual" / "model.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_dict(build_model(arch).eval(), arch), ckpt)
    visual = root / "onnx" / "visual.onnx"
    export_visual(ckpt, visual)

    audio_cfg = AudioConfig()
    tdnn = TDNN(TDNNConfig(channels=(8, 8), kernel_sizes=(3, 1), dilations=(1, 1))).eval()
    audio = root / "audio" / "tdnn.onnx"
    export_onnx(tdnn, (torch.randn(2, audio_cfg.n_mels, audio_cfg.context_frames),), audio,
                input_names=["mel"], output_names=["embedding"],
                dynamic_axes={"mel": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}},
                metadata={"audio_config": to_dict(audio_cfg), "context_frames": audio_cfg.context_frames})

    sequence = export_sequence(root / "sequence" / "sequence.onnx", modalities)
    return PredictModelPaths(visual, audio, sequence)


def export_sequence(path: Path, modalities: str) -> Path:
    """Export a tiny random sequence model reading ``modalities`` features to ``path``."""
    model = SequenceModel(SequenceArch(input_dim=feature_dim(modalities), d_model=16, heads=2, dropout=0.0,
                                       max_len=WINDOW)).eval()
    axes = {0: "batch", 1: "length"}
    # The parity check runs one frame longer than the example, so the example is one short of max_len.
    export_onnx(model, (torch.randn(2, WINDOW - 1, model.arch.input_dim),), path,
                input_names=["features"], output_names=["au_logits", "expr_logits", "va_pred"],
                dynamic_axes={"features": axes, "au_logits": axes, "expr_logits": axes, "va_pred": axes},
                metadata={"modalities": modalities, "window": WINDOW, "stride": STRIDE})
    return path


class _AuExprOnly(torch.nn.Module):
    """A sequence model's AU and EXPR outputs alone: the outputs a file exported before VA has."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        au, expr, _ = self.model(features)
        return au, expr


def export_pre_va_sequence(path: Path, modalities: str = "both") -> Path:
    """Export a tiny sequence model without the ``va_pred`` output, as files made before VA are."""
    model = SequenceModel(SequenceArch(input_dim=feature_dim(modalities), d_model=16, heads=2, dropout=0.0,
                                       max_len=WINDOW)).eval()
    axes = {0: "batch", 1: "length"}
    export_onnx(_AuExprOnly(model).eval(), (torch.randn(2, WINDOW - 1, model.arch.input_dim),), path,
                input_names=["features"], output_names=["au_logits", "expr_logits"],
                dynamic_axes={"features": axes, "au_logits": axes, "expr_logits": axes},
                metadata={"modalities": modalities, "window": WINDOW, "stride": STRIDE})
    return path
