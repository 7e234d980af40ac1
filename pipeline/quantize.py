"""int8 CPU inference: onnxruntime static quantization of ``visual.onnx`` and ``tdnn.onnx``.

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

Example (a stand-in model; any ``visual.onnx`` and ``frames.h5`` work the same way)::

    report = quantize_visual("cache/onnx/visual.onnx", "cache/frames/frames.h5",
                             "cache/onnx/visual.int8.onnx", CalibrationConfig(n_crops=256))
    read_metadata("cache/onnx/visual.int8.onnx")["quantization"]["calibration"]["crops"][:2]
    # [["video1", 0], ["video1", 17]]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx

from pipeline.audio.windows import VideoAudio
from pipeline.storage.frame_store import FrameStore
from pipeline.config import check_fields
from pipeline.export import METADATA_KEY, make_session, read_metadata
from pipeline.fsio import atomic_path, file_sha256
from pipeline.models.preprocess import to_model_input
from pipeline.precision import precision_path

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


# the TDNN keeps its pooling and projection in float32 (see the module docstring)
TDNN_SETTINGS = QuantSettings(operators=("Conv",))


def int8_path(float_path: str | Path) -> Path:
    """Where the int8 model of ``float_path`` lives: ``visual.onnx`` -> ``visual.int8.onnx`` beside it."""
    return precision_path(float_path, "int8")


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
    """Write the int8 QDQ model of ``float_path`` (default :func:`int8_path`), calibrated on ``frames_path``.

    The float model is only read. The int8 file is published atomically after onnxruntime loads it and
    it gives finite outputs on the calibration crops. Returns the ``quantization`` metadata plus
    ``max_abs_diff`` per output against the float model on those crops.
    """
    float_path = Path(float_path)
    input_name = make_session(float_path, "cpu", threads=1).get_inputs()[0].name
    crops = calibration_crops(frames_path, config.n_crops, config.seed)
    calibration = {"frames": str(frames_path), "frames_sha256": file_sha256(frames_path), "seed": config.seed,
                   "method": "minmax", "n_crops": len(crops), "crops": [[name, frame] for name, frame in crops]}
    return _quantize(float_path, out_path, calibration,
                     lambda size: _crop_batches(frames_path, crops, size, input_name),
                     config.batch_size, settings)


def calibration_windows(audios: Mapping[str, VideoAudio], n_windows: int, seed: int) -> list[tuple[str, int]]:
    """``n_windows`` (video, frame) pairs drawn without replacement from the frames with audio, in name order.

    Fewer when the videos hold fewer such frames; raises ``ValueError`` when none has audio.
    """
    frames = [(name, int(i)) for name in sorted(audios) for i in np.flatnonzero(audios[name].present)]
    if not frames:
        raise ValueError(f"no frame with audio in videos {sorted(audios)} to calibrate the TDNN on")
    picked = np.random.default_rng(seed).choice(len(frames), size=min(n_windows, len(frames)), replace=False)
    return [frames[i] for i in sorted(picked)]


def _window_batches(audios: Mapping[str, VideoAudio], windows: Sequence[tuple[str, int]],
                    batch_size: int) -> Iterator[Feed]:
    """The chosen frames' log-mel windows (B, n_mels, context) as ``mel`` batches."""
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        yield {"mel": np.concatenate([audios[name].windows([frame]).mel for name, frame in chunk])}


def quantize_tdnn(
    float_path: str | Path,
    audios: Mapping[str, VideoAudio],
    out_path: str | Path | None = None,
    config: CalibrationConfig = CalibrationConfig(),
    settings: QuantSettings = TDNN_SETTINGS,
) -> dict[str, Any]:
    """Write the int8 QDQ model of ``tdnn.onnx`` (default :func:`int8_path`), calibrated on ``audios``.

    ``audios`` maps video names to their soundtracks' log-mel (the training videos); ``config.n_crops``
    windows are drawn from their frames with audio and recorded by (video, frame) in the metadata.
    By default only the convolutions are quantized (see the module docstring). Returns the ``quantization``
    metadata plus ``max_abs_diff`` of ``embedding`` against the float model on those windows.
    """
    windows = calibration_windows(audios, config.n_crops, config.seed)
    calibration = {"videos": sorted({name for name, _ in windows}), "seed": config.seed, "method": "minmax",
                   "n_windows": len(windows), "windows": [[name, frame] for name, frame in windows]}
    return _quantize(Path(float_path), out_path, calibration, lambda size: _window_batches(audios, windows, size),
                     config.batch_size, settings)


class _BatchReader:
    """onnxruntime's calibration data reader over an iterator of feeds."""

    def __init__(self, batches: Iterator[Feed]) -> None:
        self.batches = batches

    def get_next(self) -> Feed | None:
        """The next batch, or None when all were fed."""
        return next(self.batches, None)


def _quantize(float_path: Path, out_path: str | Path | None, calibration: dict[str, Any], batches: Any,
              batch_size: int, settings: QuantSettings) -> dict[str, Any]:
    """Quantize ``float_path`` on ``batches(batch_size)``, record ``calibration``, check and publish atomically."""
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
        _set_metadata(tmp, {**metadata, "quantization": quantization})
        diffs = _compare(make_session(float_path, "cpu", threads=1), make_session(tmp, "cpu", threads=1),
                         batches(64), out_path)
    log.info("quantized %s -> %s (max abs diff %s)", float_path, out_path, diffs)
    return {**quantization, "max_abs_diff": diffs}


def _set_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Replace the model's ``mmaffect`` metadata entry by ``metadata``."""
    proto = onnx.load(str(path))
    kept = [(e.key, e.value) for e in proto.metadata_props if e.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, json.dumps(metadata, sort_keys=True))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


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
