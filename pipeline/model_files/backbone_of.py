"""A fine-tuned visual model's backbone as a starting point for another fine-tuning (``mmaffect backbone-of``).

A study's positive control starts ``finetune-visual`` from the backbone of a visual model fine-tuned on
another synthetic draw. :func:`publish_backbone_of` takes that backbone out of ``model.pt``
(:mod:`pipeline.model_files.visual`) and publishes it as ``pretrain-face`` publishes its own
(:func:`pipeline.model_files.backbone.publish_backbone`), so ``finetune-visual --pretrained`` (the
``data.pretrained_backbone`` param) reads it like any pretrained backbone. Kept apart from those two
modules so that the pipeline's stages, which import them, do not depend on this utility.

Example:
    >>> import tempfile
    >>> import torch
    >>> from pipeline.model_files.backbone import load_backbone_state
    >>> from pipeline.model_files.visual import save_checkpoint
    >>> from pipeline.models.multitask import build_model
    >>> from pipeline.models.registry import create_backbone
    >>> arch = {"backbone": "iresnet18", "width_mult": 0.0625, "dropout": 0.0}
    >>> root = Path(tempfile.mkdtemp())
    >>> trained = build_model(arch)
    >>> save_checkpoint(root / "model.pt", trained, arch, {"epoch": 2})
    >>> path = publish_backbone_of(root / "model.pt", root / "controls")
    >>> fresh = create_backbone("iresnet18", width_mult=0.0625)
    >>> load_backbone_state(fresh, path)
    >>> torch.equal(fresh.conv1.weight, trained.backbone.conv1.weight)
    True
"""

from __future__ import annotations

from pathlib import Path

from pipeline.model_files.backbone import BACKBONE_FILE, publish_backbone
from pipeline.model_files.loading import read_checkpoint
from pipeline.model_files.visual import STAGE, build_from_checkpoint


def publish_backbone_of(model_path: str | Path, out_dir: str | Path) -> Path:
    """Write the backbone of a fine-tuned ``model.pt`` as ``out_dir/backbone.pth`` and ``backbone.json``, as
    ``pretrain-face`` publishes one, replacing ``out_dir``; ``backbone.json``'s ``init`` names ``model_path``,
    its ``epoch`` is the model's and its ``margin`` is ``None`` (no face-recognition loss made it). Returns the
    path of ``backbone.pth``."""
    ckpt = read_checkpoint(model_path, "visual model", STAGE)
    try:
        model = build_from_checkpoint(ckpt)
    except ValueError as exc:
        raise ValueError(f"{model_path}: {exc}") from exc
    arch = {"backbone": ckpt["arch"]["backbone"], "width_mult": ckpt["arch"].get("width_mult", 1.0)}
    made = {"epoch": ckpt.get("epoch"), "init": str(model_path), "margin": None}
    publish_backbone(model.backbone, arch, made, out_dir)
    return Path(out_dir) / BACKBONE_FILE
