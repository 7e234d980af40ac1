"""ONNX export with an onnxruntime-vs-torch parity check before the file is published.

``export_onnx`` exports an eval-mode fp32 copy of a module (the caller's module is not touched),
runs ``onnx.checker``, stores JSON metadata in ``metadata_props["mmaffect"]``, then compares
onnxruntime (CPU provider) with torch on a batch of another size than the example (which exercises
the dynamic batch axis). Only when every output agrees (:func:`check_parity`: the largest difference
is at most ``rtol`` times the output's scale, ``max(1, max|torch output|)``) is the file renamed onto
its final path; otherwise :class:`ParityError` is raised and nothing is published.

The exporter is torch's TorchScript-based one (``dynamo=False``): the torch.export-based exporter
needs ``onnxscript``, which is not a dependency.

This is the shared mechanics every exported model goes through; what each model's ONNX file
holds (inputs, outputs, metadata) is said by its module in :mod:`pipeline.model_files`.

Example (not run here: cache/onnx/visual.onnx comes from the visual model's export)::

    session = make_session("cache/onnx/visual.onnx", device="cpu", threads=2)
    emb, au, expr = session.run(None, {"image": images})  # (B,512), (B,12), (B,7)
    read_metadata("cache/onnx/visual.onnx")["model"]      # 'visual'
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
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
from pipeline.fsio import atomic_path

log = logging.getLogger(__name__)

METADATA_KEY = "mmaffect"
DEFAULT_PARITY_RTOL = 1e-4
# Half a float16 step relative to the value (2**-11): the rounding the embedding stores apply.
FLOAT16_RELATIVE_STEP = 2.0 ** -11


class ParityError(ValueError):
    """onnxruntime and torch disagree on an exported model's outputs."""


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    metadata: Mapping[str, Any],
    rtol: float = DEFAULT_PARITY_RTOL,
    opset: int = 17,
    rtol_param: str = "parity_rtol",
) -> dict[str, Any]:
    """Export ``model`` to ``path`` after checker and parity pass; return the parity report.

    ``rtol`` is the parity tolerance (see :func:`check_parity`); ``rtol_param`` names the params key
    it comes from, so that a failure says which key to change.
    """
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
        report = _parity(reference, tmp, examples, input_names, output_names, dynamic_axes, rtol, rtol_param, path)
    report["opset"] = opset
    return report


def _parity(
    reference: nn.Module,
    onnx_path: Path,
    examples: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    rtol: float,
    rtol_param: str,
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
    relative: dict[str, float] = {}
    for name, ours, theirs in zip(output_names, got, expected):
        diffs[name], relative[name] = check_parity(ours, theirs.numpy(), rtol, f"{final_path}: output {name!r}", rtol_param)
    return {"max_abs_diff": diffs, "max_rel_diff": relative, "parity_rtol": rtol,
            "parity_shapes": {n: list(t.shape) for n, t in zip(input_names, inputs)}}


def check_parity(ours: np.ndarray, reference: np.ndarray, rtol: float, where: str, rtol_param: str) -> tuple[float, float]:
    """Raise :class:`ParityError` unless ``max|ours - reference| <= rtol * max(1, max|reference|)``.

    Returns ``(max abs difference, that difference relative to the scale)``. The bound scales with
    the output because float32 rounding does: a TDNN embedding of magnitude 10 differs between two
    correct runtimes by about 1e-4, which an absolute bound of that size rejects. The floor of 1
    keeps outputs near zero (logits of an untrained head) from demanding agreement finer than the
    rounding of the larger values they were computed from. ``where`` starts the message (file and
    output); ``rtol_param`` is the params key named as the thing to loosen.

    Example:
        >>> check_parity(np.array([10.0001]), np.array([10.0]), 1e-4, "m.onnx: output 'y'", "parity_rtol")[1] < 1e-4
        True
    """
    reference = np.asarray(reference)
    ours = np.asarray(ours)
    if ours.shape != reference.shape:
        raise ParityError(f"{where} has shape {ours.shape} in onnxruntime, {reference.shape} in torch")
    if not np.isfinite(reference).all():
        raise ParityError(f"{where} holds NaN or Inf in torch: the model's weights are not finite; "
                          f"retrain it (for example with a lower lr) before exporting")
    if ours.size == 0:
        return 0.0, 0.0
    diff = float(np.max(np.abs(ours.astype(np.float64) - reference.astype(np.float64))))
    scale = max(1.0, float(np.max(np.abs(reference))))
    relative = diff / scale
    if not np.isfinite(diff) or relative > rtol:
        raise ParityError(
            f"{where} differs between onnxruntime and torch by {diff:.3g}, {relative:.3g} of its scale "
            f"{scale:.3g} (max(1, max|torch|)) > {rtol_param} {rtol:g}. If this is float32 rounding (a few "
            f"1e-5 of the scale, differing between CPUs), raise {rtol_param} in params.yaml: the embedding "
            f"stores keep float16, which rounds to about {FLOAT16_RELATIVE_STEP:.1e} of the scale, so a "
            f"tolerance up to that is finer than what they keep; a difference near 1 means the exported graph "
            f"computes something else (an op that depends on the traced batch or length, or a layer left in "
            f"train mode)"
        )
    return diff, relative


def check_parity_rtol(value: float) -> None:
    """Raise :class:`ConfigError` on ``parity_rtol`` unless ``0 < value < 1``."""
    if not 0 < value < 1:
        raise ConfigError(f"must be > 0 and < 1 (a share of the output's scale), got {value}", key="parity_rtol")


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


def _load_proto(path: Path) -> onnx.ModelProto:
    """The model at ``path`` (errors name the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc


def check_outputs(path: str | Path, names: Sequence[str], remedy: str) -> None:
    """Raise ``ValueError`` naming ``path`` when its graph lacks any of the outputs ``names``
    (a model exported by an older version of the pipeline); ``remedy`` says how to get a current one."""
    path = Path(path)
    present = {output.name for output in _load_proto(path).graph.output}
    missing = [name for name in names if name not in present]
    if missing:
        raise ValueError(f"{path}: the model has no output {', '.join(missing)} (it has {', '.join(sorted(present))}); "
                         f"{remedy}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored by :func:`export_onnx` in ``metadata_props["mmaffect"]``."""
    path = Path(path)
    proto = _load_proto(path)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path}: no {METADATA_KEY!r} metadata; was it written by export_onnx?")


def set_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Replace the model's ``mmaffect`` metadata entry at ``path`` by ``metadata`` (other entries kept)."""
    proto = onnx.load(str(path))
    kept = [(e.key, e.value) for e in proto.metadata_props if e.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, json.dumps(dict(metadata), sort_keys=True))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
