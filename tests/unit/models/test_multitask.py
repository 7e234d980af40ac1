"""Multi-task model: heads, checkpoints round trip, pretrained arcface backbones, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models.iresnet import iresnet18
from pipeline.model_files.backbone import load_backbone_state
from pipeline.model_files.checkpoint import CheckpointMismatchError
from pipeline.model_files.visual import build_from_checkpoint, checkpoint_dict
from pipeline.models.multitask import MultiTaskModel, build_model
from pipeline.models.preprocess import to_model_input

TINY = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.0}


def test_forward_shapes_and_feature_head_split() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        au, expr, va = model(x)
        feat = model.forward_features(x)
        au2, expr2, va2 = model.forward_head(feat)
    assert au.shape == (3, 12) and expr.shape == (3, 7) and va.shape == (3, 2) and feat.shape == (3, 512)
    torch.testing.assert_close(au, au2)
    torch.testing.assert_close(expr, expr2)
    torch.testing.assert_close(va, va2)
    assert va.abs().max() < 1.0   # tanh: valence and arousal stay in (-1, 1)


def test_every_trainable_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).train()
    au, expr, va = model(torch.randn(2, 3, 112, 112))
    (au.square().mean() + expr.square().mean() + va.square().mean()).backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []


def test_checkpoint_round_trip_through_torch_save(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    ckpt = checkpoint_dict(model, TINY, {"epoch": 2, "metrics": {"au": {"f1": 0.5}}})
    assert ckpt["arch"] == TINY and ckpt["epoch"] == 2
    torch.save(ckpt, tmp_path / "model.pt")
    loaded = build_from_checkpoint(torch.load(tmp_path / "model.pt", weights_only=True)).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_errors() -> None:
    model = build_model(TINY)
    with pytest.raises(ValueError, match="may not be named"):
        checkpoint_dict(model, TINY, {"state_dict": {}})
    with pytest.raises(ValueError, match="missing \\['arch'\\]"):
        build_from_checkpoint({"state_dict": {}})
    wider = {**TINY, "width_mult": 0.25}
    ckpt = checkpoint_dict(build_model(wider), wider)
    with pytest.raises(CheckpointMismatchError, match=r"'backbone.conv1.weight' has shape \(16, 3, 3, 3\)"):
        build_from_checkpoint({**ckpt, "arch": TINY})
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model({"backbone": "vit"})
    with pytest.raises(ValueError, match="'backbone'"):
        build_model({"width_mult": 1.0})


def _arcface_checkpoint(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """What arcface_torch saves: a bare backbone state_dict (DDP runs add ``module.``)."""
    torch.manual_seed(1)
    state = iresnet18(width_mult=0.125).state_dict()
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return state


@pytest.mark.parametrize("prefix", ["", "module."])
def test_pretrained_arcface_backbone_loads(tmp_path: Path, prefix: str) -> None:
    state = _arcface_checkpoint(tmp_path / "backbone.pth", prefix)
    model = build_model(TINY)
    load_backbone_state(model.backbone, tmp_path / "backbone.pth")
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_pretrained_wrong_architecture_names_first_mismatching_key(tmp_path: Path) -> None:
    _arcface_checkpoint(tmp_path / "backbone.pth")
    model = MultiTaskModel(iresnet18(width_mult=0.25))
    with pytest.raises(CheckpointMismatchError, match=r"'conv1.weight' has shape \(8, 3, 3, 3\) .* \(16, 3, 3, 3\)"):
        load_backbone_state(model.backbone, tmp_path / "backbone.pth")
    deeper = build_model({**TINY, "backbone": "iresnet34"})
    with pytest.raises(CheckpointMismatchError, match="'layer1.2.bn1.weight'.*missing"):
        load_backbone_state(deeper.backbone, tmp_path / "backbone.pth")


def test_pretrained_missing_or_unreadable_file(tmp_path: Path) -> None:
    model = build_model(TINY)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_state(model.backbone, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_backbone_state(model.backbone, tmp_path / "junk.pth")
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="expected a state_dict"):
        load_backbone_state(model.backbone, tmp_path / "nested.pth")


def test_to_model_input_normalises_like_arcface() -> None:
    images = np.zeros((2, 112, 112, 3), dtype=np.uint8)
    images[0, 5, 7] = (0, 128, 255)
    x = to_model_input(images)
    assert x.shape == (2, 3, 112, 112) and x.dtype == torch.float32 and x.is_contiguous()
    torch.testing.assert_close(x[0, :, 5, 7], torch.tensor([-1.0, (128 / 255 - 0.5) / 0.5, 1.0]))
    assert torch.all(x[1] == -1.0)
    torch.testing.assert_close(to_model_input(torch.from_numpy(images)), x)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, 112, 112, 3\)"):
        to_model_input(np.zeros((2, 3, 112, 112), dtype=np.uint8))


def test_the_va_head_reads_the_unit_length_embedding() -> None:
    """Its output depends on the embedding's direction only: the scale the other losses grow cannot saturate it."""
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    feat = torch.randn(4, 512)
    with torch.no_grad():
        _, _, va = model.forward_head(feat)
        _, _, va_scaled = model.forward_head(feat * 50.0)
    torch.testing.assert_close(va, va_scaled)
