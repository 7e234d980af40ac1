"""A seeded tiny visual model on disk: ``visual/model.pt`` (iresnet18 at width 1/16) and its ``onnx/visual.onnx``."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.model_files.visual import export_visual
from pipeline.model_files.visual import checkpoint_dict
from pipeline.models.multitask import build_model

ARCH = {"backbone": "iresnet18", "width_mult": 0.0625, "dropout": 0.0}


def write_visual_models(root: Path) -> Path:
    """Write ``root/visual/model.pt`` (seed 0, eval mode) and its export ``root/onnx/visual.onnx``; return ``root``."""
    torch.manual_seed(0)
    (root / "visual").mkdir(parents=True)
    torch.save(checkpoint_dict(build_model(ARCH).eval(), ARCH), root / "visual" / "model.pt")
    export_visual(root / "visual" / "model.pt", root / "onnx" / "visual.onnx")
    return root
