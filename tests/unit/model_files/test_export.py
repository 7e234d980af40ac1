"""ONNX export: parity-checked publication, dynamic batch, metadata, sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.model_files.onnx_export import ParityError, check_parity, export_onnx, make_session, read_metadata
from pipeline.au_thresholds import AuThresholds, fixed_thresholds
from pipeline.model_files.loading import model_thresholds
from pipeline.model_files.visual import ExportConfig, export_visual, write_float16
from pipeline.model_files.visual import checkpoint_dict
from pipeline.models.multitask import build_model

TINY = {"backbone": "iresnet18", "width_mult": 0.125, "dropout": 0.1}


@pytest.fixture(scope="module")
def visual_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = build_model(TINY)
    model.train()
    # a few training-mode passes give the BN layers non-trivial running statistics
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 112, 112))
    path = tmp_path_factory.mktemp("visual") / "model.pt"
    torch.save(checkpoint_dict(model, TINY, {"epoch": 1}), path)
    return path, model.eval()


def test_export_visual_publishes_a_matching_model(visual_checkpoint: tuple[Path, nn.Module], tmp_path: Path) -> None:
    ckpt_path, model = visual_checkpoint
    out = tmp_path / "onnx" / "visual.onnx"
    report = export_visual(ckpt_path, out, ExportConfig(opset=17, parity_rtol=1e-4, example_batch=2))
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["visual.onnx"]
    # the parity check compares every output, the valence-arousal one included
    assert set(report["max_abs_diff"]) == {"embedding", "au_logits", "expr_logits", "va_pred"}
    assert max(report["max_abs_diff"].values()) <= 1e-4 and report["parity_shapes"]["image"][0] == 3

    session = make_session(out, device="cpu", threads=1)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["embedding", "au_logits", "expr_logits", "va_pred"]
    x = torch.randn(5, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    embedding, au, expr, va = session.run(None, {"image": x.numpy()})
    assert embedding.shape == (5, 512) and au.shape == (5, 12) and expr.shape == (5, 7) and va.shape == (5, 2)
    with torch.no_grad():
        ref_au, ref_expr, ref_va = model(x)
        ref_embedding = model.forward_features(x)
    np.testing.assert_allclose(embedding, ref_embedding.numpy(), atol=1e-4)
    np.testing.assert_allclose(au, ref_au.numpy(), atol=1e-4)
    np.testing.assert_allclose(expr, ref_expr.numpy(), atol=1e-4)
    np.testing.assert_allclose(va, ref_va.numpy(), atol=1e-4)
    assert np.abs(va).max() <= 1.0   # tanh: valence and arousal in [-1, 1]

    meta = read_metadata(out)
    assert meta["arch"] == TINY and meta["model"] == "visual"
    assert meta["preprocessing"]["formula"] == "(x / 255 - 0.5) / 0.5"
    assert len(meta["au_names"]) == 12 and len(meta["expr_names"]) == 7 and len(meta["checkpoint_sha256"]) == 64
    assert meta["va_names"] == ["valence", "arousal"] and meta["outputs"]["va_pred"] == ["batch", 2]
    # a checkpoint without AU thresholds (from before calibration) gives a file without them: 0.5 everywhere
    assert "au_thresholds" not in meta
    assert model_thresholds(out, "visual model", "finetune-visual") == fixed_thresholds(f"{out} carries no thresholds")
    assert model_thresholds(ckpt_path, "visual model", "finetune-visual").values == (0.5,) * 12


def test_au_thresholds_travel_from_the_checkpoint_to_the_onnx_file_and_its_copies(
        visual_checkpoint: tuple[Path, nn.Module], tmp_path: Path) -> None:
    _, model = visual_checkpoint
    chosen = AuThresholds(tuple(np.linspace(0.2, 0.8, 12)), "per_au", ("calibrated",) * 11 + ("no positive",), "test")
    ckpt_path = tmp_path / "model.pt"
    torch.save(checkpoint_dict(model, TINY, {"epoch": 1, "au_thresholds": chosen.record()}), ckpt_path)
    out = tmp_path / "onnx" / "visual.onnx"
    export_visual(ckpt_path, out, ExportConfig())
    write_float16(out)
    for path in (ckpt_path, out, out.with_name("visual.fp16.onnx")):
        assert model_thresholds(path, "visual model", "finetune-visual") == chosen, path


class BatchDependent(nn.Module):
    """Traces to a constant branch: correct at the example batch size only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 2:
            return x * 2.0
        return x * 3.0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_parity_failure_publishes_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ParityError, match=r"model.onnx: output 'y' differs .* > parity_rtol"):
        export_onnx(BatchDependent(), (torch.zeros(2, 4),), out, ["x"], ["y"], {"x": {0: "b"}, "y": {0: "b"}}, {"m": 1})
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_parity_uses_the_tolerance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with pytest.raises(ParityError, match="export_onnx.parity_rtol 1e-12"):
        export_onnx(model, (torch.zeros(2, 3, 112, 112),), tmp_path / "m.onnx", ["image"], ["au", "expr"],
                    {"image": {0: "b"}}, {}, rtol=1e-12, rtol_param="export_onnx.parity_rtol")
    assert not (tmp_path / "m.onnx").exists()


class Scaled(nn.Module):
    """A large-magnitude output (like a TDNN embedding of about 10) next to a small one."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1000.0 * torch.tanh(x), 0.01 * x


def test_parity_tolerance_scales_with_the_output(tmp_path: Path) -> None:
    # float32 rounding at magnitude 1000 is up to 6e-5 per value: an absolute bound of 1e-5 could
    # reject it, 1e-5 of the output's magnitude cannot
    report = export_onnx(Scaled(), (torch.zeros(2, 4),), tmp_path / "m.onnx", ["x"], ["big", "small"],
                         {"x": {0: "b"}}, {}, rtol=1e-5)
    assert report["parity_rtol"] == 1e-5
    assert set(report["max_rel_diff"]) == {"big", "small"}
    assert all(v <= 1e-5 for v in report["max_rel_diff"].values())


def test_check_parity_passes_small_relative_error_on_a_large_output() -> None:
    reference = np.linspace(-10.0, 10.0, 512, dtype=np.float32)[None]
    ours = reference + np.float32(1.37e-4)      # the difference that failed an absolute 1e-4 bound
    diff, relative = check_parity(ours, reference, 1e-4, "tdnn.onnx: output 'embedding'", "train_audio.parity_rtol")
    assert diff == pytest.approx(1.37e-4, rel=0.05)
    assert relative == pytest.approx(1.37e-5, rel=0.05)


def test_check_parity_fails_large_relative_error_naming_the_param() -> None:
    reference = np.linspace(-10.0, 10.0, 512, dtype=np.float32)[None]
    ours = reference.copy()
    ours[0, 3] += 0.05                          # 5e-3 of the magnitude: more than float16 keeps
    with pytest.raises(ParityError) as info:
        check_parity(ours, reference, 1e-4, "tdnn.onnx: output 'embedding'", "train_audio.parity_rtol")
    message = str(info.value)
    assert message.startswith("tdnn.onnx: output 'embedding' differs between onnxruntime and torch by 0.05")
    assert "of its scale 10" in message and "raise train_audio.parity_rtol in params.yaml" in message
    assert "\n" not in message


def test_check_parity_floors_the_scale_at_one() -> None:
    reference = np.full((2, 3), 1e-3, np.float32)
    check_parity(reference + 5e-5, reference, 1e-4, "m.onnx: output 'y'", "parity_rtol")
    with pytest.raises(ParityError, match="of its scale 1 "):
        check_parity(reference + 5e-4, reference, 1e-4, "m.onnx: output 'y'", "parity_rtol")


def test_check_parity_refuses_non_finite_and_shape_mismatch() -> None:
    reference = np.array([[1.0, np.nan]], np.float32)
    with pytest.raises(ParityError, match="m.onnx: output 'y' holds NaN or Inf in torch.*lower lr"):
        check_parity(reference, reference, 1e-4, "m.onnx: output 'y'", "parity_rtol")
    with pytest.raises(ParityError, match="has shape \\(1, 2\\) in onnxruntime, \\(2,\\) in torch"):
        check_parity(np.zeros((1, 2)), np.zeros(2), 1e-4, "m.onnx: output 'y'", "parity_rtol")
    with pytest.raises(ParityError, match="differs"):
        check_parity(np.array([np.inf]), np.array([1.0]), 1e-4, "m.onnx: output 'y'", "parity_rtol")


def test_export_leaves_the_callers_model_untouched(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    report = export_onnx(model, (torch.zeros(2, 4),), tmp_path / "m.onnx", ["x"], ["y"], {"x": {0: "b"}, "y": {0: "b"}}, {"k": [1, 2]})
    assert model.training and all(m.training for m in model.modules())
    assert report["max_abs_diff"]["y"] <= 1e-6
    assert read_metadata(tmp_path / "m.onnx") == {"k": [1, 2]}


def test_export_argument_errors(tmp_path: Path, visual_checkpoint: tuple[Path, nn.Module]) -> None:
    with pytest.raises(ValueError, match="2 input names for 1 example inputs"):
        export_onnx(nn.Identity(), (torch.zeros(1),), tmp_path / "a.onnx", ["a", "b"], ["y"], {}, {})
    with pytest.raises(TypeError):
        export_onnx(nn.Identity(), (torch.zeros(1),), tmp_path / "a.onnx", ["a"], ["y"], {}, {"bad": object()})
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_visual(tmp_path / "missing.pt", tmp_path / "v.onnx")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a visual model checkpoint"):
        export_visual(tmp_path / "other.pt", tmp_path / "v.onnx")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        export_visual(tmp_path / "junk.pt", tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"opset": 9}, "opset"), ({"parity_rtol": 0.0}, "parity_rtol"), ({"parity_rtol": 1.5}, "parity_rtol"),
    ({"example_batch": 0}, "example_batch"),
])
def test_export_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExportConfig(**kwargs)


def test_session_options_and_errors(tmp_path: Path) -> None:
    export_onnx(nn.Linear(4, 3), (torch.zeros(2, 4),), tmp_path / "m.onnx", ["x"], ["y"], {"x": {0: "b"}}, {})
    session = make_session(tmp_path / "m.onnx", device="cpu", threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        make_session(tmp_path / "nothing.onnx")
    with pytest.raises(ValueError, match="threads"):
        make_session(tmp_path / "m.onnx", threads=-1)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ValueError, match="junk.onnx"):
        make_session(tmp_path / "junk.onnx", device="cpu")
    with pytest.raises(ValueError, match="junk.onnx"):
        read_metadata(tmp_path / "junk.onnx")


def test_read_metadata_requires_the_entry(tmp_path: Path) -> None:
    import onnx

    export_onnx(nn.Linear(4, 3), (torch.zeros(2, 4),), tmp_path / "m.onnx", ["x"], ["y"], {"x": {0: "b"}}, {"a": 1})
    proto = onnx.load(str(tmp_path / "m.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="no 'mmaffect' metadata"):
        read_metadata(tmp_path / "bare.onnx")
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "none.onnx")
