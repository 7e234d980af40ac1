"""int8 CPU inference: onnxruntime static quantization of ``visual.onnx``, calibrated on stored crops.

The int8 model is QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized operator), with
per-channel int8 weights and uint8 activations (U8S8, which onnxruntime recommends on AVX2) whose
ranges come from running the float model over face crops drawn from the frame store. It keeps the
float model's inputs, outputs and metadata, and adds a ``quantization`` entry that records how it was
made and exactly which crops calibrated it, so a later reader can rebuild or question it.

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
from typing import Any, Iterator

import numpy as np
import onnx

from pipeline.data.frame_store import FrameStore
from pipeline.export import METADATA_KEY, make_session, read_metadata
from pipeline.fsio import atomic_path, file_sha256
from pipeline.models.preprocess import to_model_input

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"


@dataclass(frozen=True)
class CalibrationConfig:
    """How many face crops calibrate the activation ranges, drawn with which seed, fed in which batches."""

    n_crops: int = 256
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.n_crops < 1 or self.batch_size < 1:
            raise ValueError(f"calibration crops and batch size must be >= 1, got {self.n_crops} and {self.batch_size}")


def int8_path(float_path: str | Path) -> Path:
    """Where the int8 model of ``float_path`` lives: ``visual.onnx`` -> ``visual.int8.onnx`` beside it."""
    path = Path(float_path)
    return path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)


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


class _CropReader:
    """onnxruntime's calibration data reader: the chosen crops as ``image`` batches, model-normalised."""

    def __init__(self, frames_path: str | Path, crops: list[tuple[str, int]], batch_size: int, input_name: str) -> None:
        self.batches = self._batches(frames_path, crops, batch_size, input_name)

    @staticmethod
    def _batches(frames_path: str | Path, crops: list[tuple[str, int]], batch_size: int,
                 input_name: str) -> Iterator[dict[str, np.ndarray]]:
        with FrameStore(frames_path) as store:
            for start in range(0, len(crops), batch_size):
                chunk = crops[start:start + batch_size]
                images = np.concatenate([store.read(name, [frame]) for name, frame in chunk])
                yield {input_name: to_model_input(images).numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when all crops were fed."""
        return next(self.batches, None)


def quantize_visual(
    float_path: str | Path,
    frames_path: str | Path,
    out_path: str | Path | None = None,
    config: CalibrationConfig = CalibrationConfig(),
) -> dict[str, Any]:
    """Write the int8 QDQ model of ``float_path`` (default :func:`int8_path`), calibrated on ``frames_path``.

    The float model is only read. The int8 file is published atomically after onnxruntime loads it and
    it gives finite outputs on the calibration crops. Returns the ``quantization`` metadata plus
    ``max_abs_diff`` per output against the float model on those crops.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    float_path = Path(float_path)
    out_path = int8_path(float_path) if out_path is None else Path(out_path)
    metadata = read_metadata(float_path)
    session = make_session(float_path, "cpu", threads=1)
    input_name = session.get_inputs()[0].name
    crops = calibration_crops(frames_path, config.n_crops, config.seed)
    quantization = {
        "format": "QDQ", "weights": "int8 per channel", "activations": "uint8",
        "float_model_sha256": file_sha256(float_path),
        "calibration": {"frames": str(frames_path), "frames_sha256": file_sha256(frames_path),
                        "seed": config.seed, "method": "minmax", "n_crops": len(crops),
                        "crops": [[name, frame] for name, frame in crops]},
    }
    with atomic_path(out_path) as tmp:
        quantize_static(
            str(float_path), str(tmp), _CropReader(frames_path, crops, config.batch_size, input_name),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        _set_metadata(tmp, {**metadata, "quantization": quantization})
        diffs = _compare(session, make_session(tmp, "cpu", threads=1), frames_path, crops, input_name, out_path)
    log.info("quantized %s -> %s on %d crops (max abs diff %s)", float_path, out_path, len(crops), diffs)
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


def _compare(float_session: Any, int8_session: Any, frames_path: str | Path, crops: list[tuple[str, int]],
             input_name: str, where: Path) -> dict[str, float]:
    """Max abs difference per output on the calibration crops; ``ValueError`` when int8 gives non-finite values."""
    reader = _CropReader(frames_path, crops, 64, input_name)
    names = [o.name for o in float_session.get_outputs()]
    diffs = dict.fromkeys(names, 0.0)
    while (feed := reader.get_next()) is not None:
        for name, ref, got in zip(names, float_session.run(None, feed), int8_session.run(None, feed)):
            if not np.isfinite(got).all():
                raise ValueError(f"{where}: the int8 model gives non-finite {name} on calibration crops")
            diffs[name] = max(diffs[name], float(np.abs(got - ref).max()))
    return diffs
