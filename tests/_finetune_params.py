"""A tiny ``finetune_visual`` params section (1/16-width iresnet18, 32 frames per task per epoch) and
the ``selection`` section."""

from __future__ import annotations

from pathlib import Path

PARAMS = """finetune_visual:
  backbone: iresnet18
  width_mult: 0.0625
  dropout: 0.0
  backbone_init: random
  epochs: {epochs}
  batch_size: 16
  lr: 0.05
  momentum: 0.9
  weight_decay: 0.0005
  schedule: cosine
  alternation: batch
  focal_gamma: 2.0
  focal_alpha: null
  pos_weight: null
  pos_weight_cap: 10.0
  use_bp4d: true
  max_frames_per_epoch: 32
  augment: {{flip_prob: 0.5, crop_scale: 0.1, hue: 0.02, saturation: 0.2, lightness: 0.2}}
  seed: 0
selection:
  mode: {selection}
  share: 0.2
  seed: 0
"""


def write_params(directory: Path, epochs: int, selection: str = "holdout") -> Path:
    """Write ``directory/params.yaml`` with the tiny section for ``epochs`` epochs and the ``selection``
    section with mode ``selection``; return its path."""
    path = directory / "params.yaml"
    path.write_text(PARAMS.format(epochs=epochs, selection=selection))
    return path
