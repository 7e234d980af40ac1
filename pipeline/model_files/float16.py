"""A float16 copy of an exported ONNX model, for GPU inference: ``visual.onnx`` -> ``visual.fp16.onnx``.

Weights and computation become float16 (onnxruntime's ``convert_float_to_float16``), while the
inputs and outputs stay float32 (Cast nodes at the graph's edges), so every caller feeds and reads
the model exactly as it does the float32 one. The copy keeps the float32 model's metadata and adds
a ``float16`` entry naming the model it was made from. It is checked with ``onnx.checker``; then,
when onnxruntime's CPU provider can run it, its outputs are compared with the float32 model's on
seeded random inputs and the copy is published only when each output agrees within ``rtol`` of its
scale, ``max(1, max|float32 output|)``. Where the CPU provider cannot run a float16 graph the
report says so and the comparison is left to a GPU (``.ci/gpu_check.sh`` makes it).

Example (not run here: it needs an exported model)::

    report = convert_float16("cache/onnx/visual.onnx", float16_path("cache/onnx/visual.onnx"))
    report["cpu_check"]["max_rel_diff"]   # per output, e.g. {"embedding": 5e-4, ...}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.fsio import atomic_path, file_sha256
from pipeline.model_files.onnx_export import METADATA_KEY, ParityError, make_session, read_metadata
from pipeline.model_files.precision import precision_path

log = logging.getLogger(__name__)

# float16 keeps 11 significant bits (relative step 2**-11 ~ 5e-4); through a deep network the
# rounding adds up to a few of those steps, so the default bound is 20 steps of the output's scale.
DEFAULT_FLOAT16_RTOL = 1e-2


def float16_path(float_path: str | Path) -> Path:
    """Where the float16 copy of ``float_path`` lives: ``visual.onnx`` -> ``visual.fp16.onnx`` beside it."""
    return precision_path(float_path, "float16")


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with float16 weights and computation and float32 inputs/outputs, topologically sorted."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(model, keep_io_types=True)
    # the converter appends its input Casts after the nodes that read them; the checker wants order
    sorted_model = OnnxModel(half)
    sorted_model.topological_sort()
    return sorted_model.model


def convert_float16(float_path: str | Path, out_path: str | Path, rtol: float = DEFAULT_FLOAT16_RTOL,
                    check_batch: int = 4, seed: int = 0) -> dict[str, Any]:
    """Write the float16 copy of ``float_path`` to ``out_path`` (atomically) after its checks; return the report.

    Raises :class:`~pipeline.model_files.onnx_export.ParityError` when the CPU provider runs the copy and an output
    differs from the float32 model's by more than ``rtol`` of its scale; nothing is written then.
    """
    float_path, out_path = Path(float_path), Path(out_path)
    metadata = read_metadata(float_path)
    half = to_float16(onnx.load(str(float_path)))
    metadata["float16"] = {"from": float_path.name, "from_sha256": file_sha256(float_path),
                           "weights": "float16", "inputs_outputs": "float32"}
    for entry in half.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps(metadata, sort_keys=True)
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"{out_path}: the float16 model fails onnx.checker: {exc}") from exc
        cpu_check = compare_on_cpu(float_path, tmp, out_path, rtol, check_batch, seed)
    report = {"path": str(out_path), "from": str(float_path), "bytes": out_path.stat().st_size,
              "float32_bytes": float_path.stat().st_size, "cpu_check": cpu_check}
    log.info("wrote %s (%d bytes; CPU check: %s)", out_path, report["bytes"], cpu_check)
    return report


def compare_on_cpu(float_path: Path, half_path: Path, final_path: Path, rtol: float, batch: int,
                   seed: int) -> dict[str, Any]:
    """The float16 model's outputs against the float32 model's on seeded random inputs (CPU provider).

    Returns ``{"ran": False, "reason": ...}`` when the CPU provider cannot load or run the float16
    graph; raises :class:`~pipeline.model_files.onnx_export.ParityError` (naming ``final_path``) when it runs and disagrees.
    """
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, NotImplemented as OrtNotImplemented

    reference = make_session(float_path, device="cpu")
    try:
        half = make_session(half_path, device="cpu")
    except ValueError as exc:
        return {"ran": False, "reason": str(exc)}
    rng = np.random.default_rng(seed)
    feed = {}
    for value in reference.get_inputs():
        shape = [batch if not isinstance(size, int) else size for size in value.shape]
        feed[value.name] = rng.standard_normal(shape).astype(np.float32)
    names = [value.name for value in reference.get_outputs()]
    expected = reference.run(names, feed)
    try:
        got = half.run(names, feed)
    except (Fail, OrtNotImplemented) as exc:
        return {"ran": False, "reason": f"onnxruntime's CPU provider cannot run it: {exc}"}
    diffs, relative = {}, {}
    for name, ours, theirs in zip(names, got, expected):
        if ours.dtype != np.float32 or ours.shape != theirs.shape:
            raise ParityError(f"{final_path}: output {name!r} is {ours.dtype} {ours.shape}, expected float32 "
                              f"{theirs.shape} as {float_path} gives")
        diff = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if ours.size else 0.0
        scale = max(1.0, float(np.max(np.abs(theirs)))) if theirs.size else 1.0
        diffs[name], relative[name] = diff, diff / scale
        if not np.isfinite(diff) or diff / scale > rtol:
            raise ParityError(f"{final_path}: output {name!r} differs from {float_path}'s by {diff:.3g}, "
                              f"{diff / scale:.3g} of its scale {scale:.3g} > {rtol:g}: float16 loses more than "
                              f"rounding here (an overflow past 65504, or a layer that needs float32)")
    return {"ran": True, "batch": batch, "rtol": rtol, "max_abs_diff": diffs, "max_rel_diff": relative}
