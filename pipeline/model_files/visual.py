"""The fine-tuned visual model's files: ``model.pt``, ``visual.onnx`` and its float16 and int8 copies.

- ``cache/visual/model.pt`` (``finetune-visual``): ``{"arch": {...}, "state_dict": {...}, "epoch",
  "au_thresholds"}`` (the AU decision thresholds, :mod:`pipeline.au_thresholds`)
  in plain containers and tensors (``weights_only`` loadable): :func:`save_checkpoint` writes it,
  :func:`load_model` rebuilds the :class:`~pipeline.models.multitask.MultiTaskModel` from it.
- ``cache/onnx/visual.onnx`` (``finetune-visual --onnx``, :func:`publish_onnx`; ``export-onnx``
  re-exports a ``model.pt``, :func:`export_visual`): input ``image`` float32
  (B,3,112,112) normalised; outputs ``embedding`` (B,512), ``au_logits`` (B,12), ``expr_logits``
  (B,7), ``va_pred`` (B,2) (valence, arousal in [-1, 1]); metadata ``model``, ``arch``,
  ``preprocessing``, ``inputs``, ``outputs``, the label names (``va_names`` among them),
  ``checkpoint_sha256`` and the checkpoint's ``au_thresholds`` (which the int8 and float16 copies keep).
- ``visual.int8.onnx`` (:func:`quantize_visual`, calibrated on face crops of the frame store) and
  ``visual.fp16.onnx`` (:func:`write_float16`) beside it; :func:`onnx_model` locates the file of a
  precision (:data:`PRECISIONS`).

Example:
    >>> import tempfile
    >>> from pipeline.models.multitask import build_model
    >>> arch = {"backbone": "iresnet18", "width_mult": 0.0625, "dropout": 0.0}
    >>> path = Path(tempfile.mkdtemp()) / "model.pt"
    >>> trained = build_model(arch).eval()
    >>> save_checkpoint(path, trained, arch, {"epoch": 3})
    >>> clone = load_model(path)
    >>> torch.equal(clone.au_head.weight, trained.au_head.weight)
    True
    >>> onnx_model("cache/onnx/visual.onnx", "float32").as_posix()
    'cache/onnx/visual.onnx'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.config import ConfigError
from pipeline.storage.frame_store import FrameStore
from pipeline.fsio import file_sha256
from pipeline.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from pipeline.model_files import checkpoint
from pipeline.model_files.checkpoint import check_state_dict, cpu_state
from pipeline.model_files.float16 import convert_float16
from pipeline.model_files.int8 import CalibrationConfig, Feed, QuantSettings, int8_path, quantize_onnx
from pipeline.model_files.loading import read_checkpoint
from pipeline.model_files.onnx_export import check_parity_rtol, export_onnx, make_session
from pipeline.model_files.precision import DEFAULT_PRECISION, precision_model, precision_path
from pipeline.models.multitask import MultiTaskModel, build_model
from pipeline.models.preprocess import IMAGE_SIZE, PREPROCESSING, to_model_input

log = logging.getLogger(__name__)

STAGE = "finetune-visual"
INPUTS: tuple[str, ...] = ("image",)
OUTPUTS: tuple[str, ...] = ("embedding", "au_logits", "expr_logits", "va_pred")
# the lower-precision copies of visual.onnx, and how each is made (for the error that reports one missing)
INT8_HOW = "finetune-visual --onnx writes it, as the pipeline does; or export-onnx --int8-calibration FRAMES_H5"
FLOAT16_HOW = "export-onnx writes it with --fp16 (docs/gpu.md)"
COPIES: dict[str, str] = {"float16": FLOAT16_HOW, "int8": INT8_HOW}
PRECISIONS: tuple[str, ...] = (DEFAULT_PRECISION, *COPIES)


# -- model.pt ----------------------------------------------------------------------------------------


def checkpoint_dict(model: nn.Module, arch: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"arch", "state_dict", **extra}`` with CPU tensors: the contents of ``model.pt``."""
    extra = dict(extra or {})
    clash = sorted({"arch", "state_dict"} & set(extra))
    if clash:
        raise ValueError(f"extra checkpoint entries may not be named {clash}")
    return {"arch": dict(arch), "state_dict": cpu_state(model), **extra}


def save_checkpoint(path: str | Path, model: nn.Module, arch: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> None:
    """Write ``model.pt`` (:func:`checkpoint_dict`) to ``path`` atomically."""
    checkpoint.save_checkpoint(path, checkpoint_dict(model, arch, extra))


def build_from_checkpoint(ckpt: Mapping[str, Any]) -> MultiTaskModel:
    """Rebuild a :class:`MultiTaskModel` from :func:`checkpoint_dict` output (weights loaded)."""
    missing = [key for key in ("arch", "state_dict") if key not in ckpt]
    if missing:
        raise ValueError(f"not a visual model checkpoint: missing {missing}; found keys {sorted(ckpt)}")
    model = build_model(ckpt["arch"])
    check_state_dict(model.state_dict(), ckpt["state_dict"], where=f"checkpoint (arch {ckpt['arch']})")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def load_model(path: str | Path) -> MultiTaskModel:
    """The :class:`MultiTaskModel` of ``model.pt`` at ``path`` (errors name the file; a missing one
    names the stage that writes it)."""
    return _load(path)[1]


def _load(path: str | Path) -> tuple[dict[str, Any], MultiTaskModel]:
    """``model.pt``'s dict and the model rebuilt from it."""
    ckpt = read_checkpoint(path, "visual model", STAGE)
    try:
        return ckpt, build_from_checkpoint(ckpt)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# -- visual.onnx -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportConfig:
    """``export_onnx`` params: ONNX opset, parity tolerance (relative), the example batch size traced,
    and the face crops calibrating the int8 model (when one is written)."""

    opset: int = 17
    parity_rtol: float = 1e-4
    example_batch: int = 2
    int8_crops: int = 256

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 21:
            raise ConfigError(f"must be between 13 and 21, got {self.opset}", key="opset")
        check_parity_rtol(self.parity_rtol)
        if self.example_batch < 1:
            raise ConfigError(f"must be >= 1, got {self.example_batch}", key="example_batch")
        if self.int8_crops < 1:
            raise ConfigError(f"must be >= 1, got {self.int8_crops}", key="int8_crops")


class ExportModule(nn.Module):
    """``image`` (B,3,112,112) -> (``embedding`` (B,512), ``au_logits`` (B,12), ``expr_logits`` (B,7),
    ``va_pred`` (B,2))."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.model.forward_features(image)
        au_logits, expr_logits, va_pred = self.model.forward_head(embedding)
        return embedding, au_logits, expr_logits, va_pred


def export_visual(checkpoint_path: str | Path, out_path: str | Path, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``cache/visual/model.pt`` as ``visual.onnx`` (parity-checked); return the parity report."""
    checkpoint_path = Path(checkpoint_path)
    ckpt, model = _load(checkpoint_path)
    metadata = {
        "model": "visual",
        "arch": ckpt["arch"],
        "preprocessing": PREPROCESSING,
        "inputs": {"image": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
        "outputs": {"embedding": ["batch", model.embed_dim], "au_logits": ["batch", len(AU_NAMES)],
                    "expr_logits": ["batch", len(EXPR_NAMES)], "va_pred": ["batch", len(VA_NAMES)]},
        "au_names": list(AU_NAMES),
        "expr_names": list(EXPR_NAMES),
        "va_names": list(VA_NAMES),
        "checkpoint_sha256": file_sha256(checkpoint_path),
    }
    if AU_THRESHOLDS in ckpt:   # a checkpoint from before calibration has none: its readers decide at 0.5
        metadata[AU_THRESHOLDS] = ckpt[AU_THRESHOLDS]
    example = torch.zeros(config.example_batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch_axis = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    report = export_onnx(
        ExportModule(model), (example,), out_path, INPUTS, OUTPUTS, batch_axis,
        metadata, rtol=config.parity_rtol, opset=config.opset, rtol_param="export_onnx.parity_rtol",
    )
    log.info("exported %s -> %s (max abs diff %s)", checkpoint_path, out_path, report["max_abs_diff"])
    return report


def publish_onnx(checkpoint_path: str | Path, onnx_path: str | Path, frames_path: str | Path,
                 config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``model.pt`` as ``visual.onnx`` and write its int8 copy beside it, calibrated on
    ``config.int8_crops`` face crops of ``frames_path`` (seed 0); return both reports
    (``{"export": ..., "int8": ...}``). Each file is published atomically after its checks."""
    report = export_visual(checkpoint_path, onnx_path, config)
    quantized = quantize_visual(onnx_path, frames_path, int8_path(onnx_path), CalibrationConfig(n_crops=config.int8_crops))
    return {"export": report, "int8": quantized}


# -- the float16 and int8 copies ---------------------------------------------------------------------


def onnx_model(float_path: str | Path, precision: str) -> Path:
    """The file of ``visual.onnx`` at ``precision`` (:data:`PRECISIONS`); a copy is checked to exist."""
    return precision_model(float_path, precision, COPIES)


def write_float16(float_path: str | Path) -> dict[str, Any]:
    """Write ``visual.fp16.onnx`` beside ``float_path`` (:func:`~pipeline.model_files.float16.convert_float16`)."""
    return convert_float16(float_path, precision_path(float_path, "float16"))


def calibration_crops(frames_path: str | Path, n_crops: int, seed: int) -> list[tuple[str, int]]:
    """``n_crops`` (subject, frame) pairs drawn without replacement from the frames with a face, in store order.

    Fewer when the store holds fewer faces; raises ``ValueError`` naming the store when it holds none.
    """
    with FrameStore(frames_path) as store:
        faces = [(name, int(i)) for name in store.names() for i in np.flatnonzero(store.face_present(name))]
    if not faces:
        raise ValueError(f"{frames_path}: no face crops to calibrate on")
    picked = np.random.default_rng(seed).choice(len(faces), size=min(n_crops, len(faces)), replace=False)
    return [faces[i] for i in sorted(picked)]


def _crop_batches(frames_path: str | Path, crops: Sequence[tuple[str, int]], batch_size: int,
                  input_name: str) -> Iterator[Feed]:
    """The chosen crops as ``input_name`` batches, model-normalised."""
    with FrameStore(frames_path) as store:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size]
            images = np.concatenate([store.read(name, [frame]) for name, frame in chunk])
            yield {input_name: to_model_input(images).numpy()}


def quantize_visual(
    float_path: str | Path,
    frames_path: str | Path,
    out_path: str | Path | None = None,
    config: CalibrationConfig = CalibrationConfig(),
    settings: QuantSettings = QuantSettings(),
) -> dict[str, Any]:
    """Write the int8 QDQ model of ``float_path`` (default :func:`~pipeline.model_files.int8.int8_path`),
    calibrated on face crops of ``frames_path``.

    The float model is only read. The int8 file is published atomically after onnxruntime loads it and
    it gives finite outputs on the calibration crops. Returns the ``quantization`` metadata plus
    ``max_abs_diff`` per output against the float model on those crops.
    """
    float_path = Path(float_path)
    input_name = make_session(float_path, "cpu", threads=1).get_inputs()[0].name
    crops = calibration_crops(frames_path, config.n_crops, config.seed)
    calibration = {"frames": str(frames_path), "frames_sha256": file_sha256(frames_path), "seed": config.seed,
                   "method": "minmax", "n_crops": len(crops), "crops": [[name, frame] for name, frame in crops]}
    return quantize_onnx(float_path, out_path, calibration,
                         lambda size: _crop_batches(frames_path, crops, size, input_name),
                         config.batch_size, settings)
