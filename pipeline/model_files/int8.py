"""int8 CPU inference: onnxruntime static quantization of an exported model (``visual.onnx``, ``tdnn.onnx``).

The int8 model is QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized operator), with
per-channel int8 weights kept to 7 bits (``reduce_range``, against the int16 saturation of
onnxruntime's u8s8 kernels on CPUs without VNNI) and uint8 activations (U8S8, which onnxruntime
recommends on AVX2) whose ranges come from running the float model over calibration inputs: face
crops drawn from the frame store for the visual model, log-mel windows of the training videos' soundtracks for the TDNN. It
keeps the float model's inputs, outputs and metadata (the TDNN's audio config included), and adds
a ``quantization`` entry that records how it was made and exactly which crops or windows calibrated
it, so a later reader can rebuild or question it. Only the TDNN's convolutions are quantized: its
statistics pooling and projection stay float32, so ``pipeline.inference.audio`` can still split
the graph at the pooling, and they are a small share of its work.

This module is the shared mechanics (:func:`quantize_onnx`); which inputs calibrate each model,
and its settings, live in the model's module (:mod:`pipeline.model_files.visual`,
:mod:`pipeline.model_files.audio`).

Example (through the visual model's module; any ``visual.onnx`` and ``frames.h5`` work the same way)::

    from pipeline.model_files.visual import quantize_visual
    report = quantize_visual("cache/onnx/visual.onnx", "cache/frames/frames.h5",
                             "cache/onnx/visual.int8.onnx", CalibrationConfig(n_crops=256))
    read_metadata("cache/onnx/visual.int8.onnx")["quantization"]["calibration"]["crops"][:2]
    # [["video1", 0], ["video1", 17]]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pipeline.config import check_fields
from pipeline.fsio import atomic_path, file_sha256
from pipeline.model_files.onnx_export import make_session, read_metadata, set_metadata
from pipeline.model_files.precision import precision_path

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class CalibrationConfig:
    """How many face crops calibrate the activation ranges, drawn with which seed, fed in which batches."""

    n_crops: int = 256
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_fields([(self.n_crops >= 1, "n_crops", f"must be >= 1, got {self.n_crops}"),
                      (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")])


@dataclass(frozen=True)
class QuantSettings:
    """How onnxruntime quantizes: the defaults are the published models' (QDQ, per-channel 7-bit int8
    weights, uint8 activations); the others exist so ``benchmarks/int8.py`` can compare them."""

    format: str = "QDQ"              # QDQ (Q/DQ pairs, fused at load) | QOperator (QLinearConv... in the file)
    per_channel: bool = True         # one weight scale per output channel, or one per tensor
    activations: str = "uint8"       # uint8 | int8
    weights: str = "int8"            # int8 | uint8
    # 7-bit weights: without VNNI (AVX2 only) onnxruntime's u8s8 kernels add pairs of u8*s8 products
    # in int16, which saturates with 8-bit weights; on the test CPU 7 bits were both closer to float32
    # and no slower (benchmarks/int8.py)
    reduce_range: bool = True
    operators: tuple[str, ...] | None = None   # operator types quantized (None: onnxruntime's default set)
    preprocess: bool = False         # onnxruntime's quant_pre_process first (shape inference, Conv+BN folding)

    def __post_init__(self) -> None:
        check_fields([
            (self.format in ("QDQ", "QOperator"), "format", f"must be QDQ or QOperator, got {self.format!r}"),
            *((getattr(self, name) in ("uint8", "int8"), name, f"must be uint8 or int8, got {getattr(self, name)!r}")
              for name in ("activations", "weights")),
        ])

    def record(self) -> dict[str, Any]:
        """The settings as the model's ``quantization`` metadata states them."""
        return {"format": self.format,
                "weights": f"{self.weights} per {'channel' if self.per_channel else 'tensor'}",
                "activations": self.activations, "reduce_range": self.reduce_range,
                "operators": list(self.operators) if self.operators else "onnxruntime default",
                "preprocess": self.preprocess}


def int8_path(float_path: str | Path) -> Path:
    """Where the int8 model of ``float_path`` lives: ``visual.onnx`` -> ``visual.int8.onnx`` beside it."""
    return precision_path(float_path, "int8")


class _BatchReader:
    """onnxruntime's calibration data reader over an iterator of feeds."""

    def __init__(self, batches: Iterator[Feed]) -> None:
        self.batches = batches

    def get_next(self) -> Feed | None:
        """The next batch, or None when all were fed."""
        return next(self.batches, None)


def quantize_onnx(float_path: Path, out_path: str | Path | None, calibration: dict[str, Any],
                  batches: Callable[[int], Iterator[Feed]], batch_size: int, settings: QuantSettings) -> dict[str, Any]:
    """Quantize ``float_path`` on ``batches(batch_size)``, record ``calibration``, check and publish atomically.

    ``batches(size)`` yields the calibration feeds (input name -> array) in batches of ``size``; each
    model's module draws them (:func:`pipeline.model_files.visual.quantize_visual`,
    :func:`pipeline.model_files.audio.quantize_tdnn`). Returns the ``quantization`` metadata plus
    ``max_abs_diff`` per output against the float model on the calibration inputs.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    out_path = int8_path(float_path) if out_path is None else Path(out_path)
    metadata = read_metadata(float_path)
    quantization = {**settings.record(), "float_model_sha256": file_sha256(float_path), "calibration": calibration}
    with atomic_path(out_path) as tmp:
        source = tmp.with_name(tmp.name + ".pre.onnx") if settings.preprocess else float_path
        try:
            if settings.preprocess:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                quant_pre_process(str(float_path), str(source))
            quantize_static(
                str(source), str(tmp), _BatchReader(batches(batch_size)),
                quant_format=QuantFormat.QDQ if settings.format == "QDQ" else QuantFormat.QOperator,
                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                activation_type=types[settings.activations], weight_type=types[settings.weights],
                op_types_to_quantize=list(settings.operators) if settings.operators else None,
            )
        finally:
            if source != float_path:
                source.unlink(missing_ok=True)
        set_metadata(tmp, {**metadata, "quantization": quantization})
        diffs = _compare(make_session(float_path, "cpu", threads=1), make_session(tmp, "cpu", threads=1),
                         batches(64), out_path)
    log.info("quantized %s -> %s (max abs diff %s)", float_path, out_path, diffs)
    return {**quantization, "max_abs_diff": diffs}


def _compare(float_session: Any, int8_session: Any, batches: Iterator[Feed], where: Path) -> dict[str, float]:
    """Max abs difference per output on the calibration batches; ``ValueError`` when int8 gives non-finite values."""
    names = [o.name for o in float_session.get_outputs()]
    diffs = dict.fromkeys(names, 0.0)
    for feed in batches:
        for name, ref, got in zip(names, float_session.run(None, feed), int8_session.run(None, feed)):
            if not np.isfinite(got).all():
                raise ValueError(f"{where}: the int8 model gives non-finite {name} on calibration inputs")
            diffs[name] = max(diffs[name], float(np.abs(got - ref).max()))
    return diffs
