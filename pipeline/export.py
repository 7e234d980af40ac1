"""ONNX export with an onnxruntime-vs-torch parity check before the file is published.

``export_onnx`` exports an eval-mode fp32 copy of a module (the caller's module is not touched),
runs ``onnx.checker``, stores JSON metadata in ``metadata_props["mmaffect"]``, then compares
onnxruntime (CPU provider) with torch on a batch of another size than the example (which exercises
the dynamic batch axis). Only when every output agrees within ``atol`` is the file renamed onto its
final path; otherwise :class:`ParityError` is raised and nothing is published.

The exporter is torch's TorchScript-based one (``dynamo=False``): the torch.export-based exporter
needs ``onnxscript``, which is not a dependency.

Example (not run here: cache/visual/model.pt comes from finetune-visual)::

    report = export_visual("cache/visual/model.pt", "cache/onnx/visual.onnx")
    session = make_session("cache/onnx/visual.onnx", device="cpu", threads=2)
    emb, au, expr = session.run(None, {"image": images})  # (B,512), (B,12), (B,7)
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph as OrtInvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf as OrtInvalidProtobuf
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.device import onnx_providers
from pipeline.fsio import atomic_path, file_sha256
from pipeline.labels import AU_NAMES, EXPR_NAMES
from pipeline.models.multitask import MultiTaskModel, build_from_checkpoint, read_torch_file
from pipeline.models.preprocess import IMAGE_SIZE, PREPROCESSING

log = logging.getLogger(__name__)

METADATA_KEY = "mmaffect"
VISUAL_INPUTS: tuple[str, ...] = ("image",)
VISUAL_OUTPUTS: tuple[str, ...] = ("embedding", "au_logits", "expr_logits")


class ParityError(ValueError):
    """onnxruntime and torch disagree on an exported model's outputs."""


@dataclass(frozen=True)
class ExportConfig:
    """``export_onnx`` params: ONNX opset, parity tolerance, and the example batch size traced."""

    opset: int = 17
    atol: float = 1e-4
    example_batch: int = 2

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 21:
            raise ConfigError(f"opset must be between 13 and 21, got {self.opset}")
        if not self.atol > 0:
            raise ConfigError(f"atol must be > 0, got {self.atol}")
        if self.example_batch < 1:
            raise ConfigError(f"example_batch must be >= 1, got {self.example_batch}")


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    metadata: Mapping[str, Any],
    atol: float = 1e-4,
    opset: int = 17,
) -> dict[str, Any]:
    """Export ``model`` to ``path`` after checker and parity pass; return the parity report."""
    path = Path(path)
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(input_names)} input names for {len(example_inputs)} example inputs")
    metadata_json = json.dumps(dict(metadata), sort_keys=True)  # fails early when not JSON-able
    # A private copy: the exporter flips train/eval modes, and the caller may hold a CUDA/half model.
    reference = copy.deepcopy(model).float().cpu().eval()
    examples = tuple(t.detach().float().cpu() for t in example_inputs)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            # the legacy exporter announces its own deprecation on every call
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                reference, examples, str(tmp), dynamo=False, input_names=list(input_names),
                output_names=list(output_names), dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                opset_version=opset, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, metadata_json
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"{path}: exported model fails onnx.checker: {exc}") from exc
        report = _parity(reference, tmp, examples, input_names, output_names, dynamic_axes, atol, path)
    report["opset"] = opset
    return report


def _parity(
    reference: nn.Module,
    onnx_path: Path,
    examples: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    atol: float,
    final_path: Path,
) -> dict[str, Any]:
    """Compare onnxruntime (CPU) with torch on inputs whose dynamic axes are one longer."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for name, example in zip(input_names, examples):
        shape = [size + 1 if axis in dynamic_axes.get(name, {}) else size for axis, size in enumerate(example.shape)]
        inputs.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    with torch.no_grad():
        expected = reference(*inputs)
    expected = (expected,) if isinstance(expected, torch.Tensor) else tuple(expected)
    session = make_session(onnx_path, device="cpu")
    got = session.run(list(output_names), {name: t.numpy() for name, t in zip(input_names, inputs)})
    diffs: dict[str, float] = {}
    for name, ours, theirs in zip(output_names, got, expected):
        theirs_np = theirs.numpy()
        if ours.shape != theirs_np.shape:
            raise ParityError(f"{final_path}: output {name!r} has shape {ours.shape} in onnxruntime, {theirs_np.shape} in torch")
        diff = float(np.max(np.abs(ours.astype(np.float64) - theirs_np))) if ours.size else 0.0
        if not np.isfinite(diff) or diff > atol:
            raise ParityError(f"{final_path}: output {name!r} differs between onnxruntime and torch by {diff:.3g} > atol {atol:g}")
        diffs[name] = diff
    return {"max_abs_diff": diffs, "parity_shapes": {n: list(t.shape) for n, t in zip(input_names, inputs)}}


def make_session(path: str | Path, device: str = "auto", threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session (CUDA provider when present and asked for); ``threads=0`` is ORT's default."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads would otherwise busy-wait and steal cores from data loading and dask.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = onnx_providers(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except (OrtFail, OrtInvalidGraph, OrtInvalidProtobuf) as exc:
        raise ValueError(f"{path}: onnxruntime cannot load the model: {exc}") from exc
    if providers[0] not in session.get_providers():
        log.warning("%s: %s unavailable, running on %s", path, providers[0], session.get_providers())
    return session


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored by :func:`export_onnx` in ``metadata_props["mmaffect"]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path}: no {METADATA_KEY!r} metadata; was it written by export_onnx?")


class VisualExportModule(nn.Module):
    """``image`` (B,3,112,112) -> (``embedding`` (B,512), ``au_logits`` (B,12), ``expr_logits`` (B,7))."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.model.forward_features(image)
        au_logits, expr_logits = self.model.forward_head(embedding)
        return embedding, au_logits, expr_logits


def export_visual(checkpoint_path: str | Path, out_path: str | Path, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``cache/visual/model.pt`` as ``visual.onnx`` (inputs/outputs as in the architecture doc)."""
    checkpoint_path = Path(checkpoint_path)
    ckpt = read_torch_file(checkpoint_path, "visual model checkpoint")
    if not isinstance(ckpt, dict):
        raise ValueError(f"{checkpoint_path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    try:
        model = build_from_checkpoint(ckpt)
    except ValueError as exc:
        raise ValueError(f"{checkpoint_path}: {exc}") from exc
    metadata = {
        "model": "visual",
        "arch": ckpt["arch"],
        "preprocessing": PREPROCESSING,
        "inputs": {"image": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
        "outputs": {"embedding": ["batch", model.embed_dim], "au_logits": ["batch", len(AU_NAMES)],
                    "expr_logits": ["batch", len(EXPR_NAMES)]},
        "au_names": list(AU_NAMES),
        "expr_names": list(EXPR_NAMES),
        "checkpoint_sha256": file_sha256(checkpoint_path),
    }
    example = torch.zeros(config.example_batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch_axis = {name: {0: "batch"} for name in (*VISUAL_INPUTS, *VISUAL_OUTPUTS)}
    report = export_onnx(
        VisualExportModule(model), (example,), out_path, VISUAL_INPUTS, VISUAL_OUTPUTS, batch_axis,
        metadata, atol=config.atol, opset=config.opset,
    )
    log.info("exported %s -> %s (max abs diff %s)", checkpoint_path, out_path, report["max_abs_diff"])
    return report
