"""ONNX export: parity-checked publication, dynamic batch, metadata, sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.export import (
    ExportConfig,
    ParityError,
    export_onnx,
    export_visual,
    make_session,
    read_metadata,
)
from pipeline.models.multitask import build_model, checkpoint_dict

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
    report = export_visual(ckpt_path, out, ExportConfig(opset=17, atol=1e-4, example_batch=2))
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["visual.onnx"]
    assert set(report["max_abs_diff"]) == {"embedding", "au_logits", "expr_logits"}
    assert max(report["max_abs_diff"].values()) <= 1e-4 and report["parity_shapes"]["image"][0] == 3

    session = make_session(out, device="cpu", threads=1)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["embedding", "au_logits", "expr_logits"]
    x = torch.randn(5, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    embedding, au, expr = session.run(None, {"image": x.numpy()})
    assert embedding.shape == (5, 512) and au.shape == (5, 12) and expr.shape == (5, 7)
    with torch.no_grad():
        ref_au, ref_expr = model(x)
        ref_embedding = model.forward_features(x)
    np.testing.assert_allclose(embedding, ref_embedding.numpy(), atol=1e-4)
    np.testing.assert_allclose(au, ref_au.numpy(), atol=1e-4)
    np.testing.assert_allclose(expr, ref_expr.numpy(), atol=1e-4)

    meta = read_metadata(out)
    assert meta["arch"] == TINY and meta["model"] == "visual"
    assert meta["preprocessing"]["formula"] == "(x / 255 - 0.5) / 0.5"
    assert len(meta["au_names"]) == 12 and len(meta["expr_names"]) == 7 and len(meta["checkpoint_sha256"]) == 64


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
    with pytest.raises(ParityError, match=r"model.onnx: output 'y' differs .* > atol"):
        export_onnx(BatchDependent(), (torch.zeros(2, 4),), out, ["x"], ["y"], {"x": {0: "b"}, "y": {0: "b"}}, {"m": 1})
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_parity_uses_the_tolerance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with pytest.raises(ParityError, match="atol 1e-12"):
        export_onnx(model, (torch.zeros(2, 3, 112, 112),), tmp_path / "m.onnx", ["image"], ["au", "expr"],
                    {"image": {0: "b"}}, {}, atol=1e-12)
    assert not (tmp_path / "m.onnx").exists()


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


@pytest.mark.parametrize(("kwargs", "match"), [({"opset": 9}, "opset"), ({"atol": 0.0}, "atol"), ({"example_batch": 0}, "example_batch")])
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
