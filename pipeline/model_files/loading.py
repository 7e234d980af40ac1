"""Reading what a trained model carries besides its weights: checkpoint dicts and ONNX metadata.

Both checks name the file, what is missing and the stage that writes it, so a stale or foreign
model file is refused before any frame is computed.

Example:
    >>> require_keys({"modalities": "both", "window": 32}, ("modalities", "window", "stride"),
    ...              "cache/sequence/model.pt", "train-sequence")
    Traceback (most recent call last):
    ...
    ValueError: cache/sequence/model.pt: lacks ['stride'] (re-run train-sequence)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.au_thresholds import AuThresholds, thresholds_of
from pipeline.model_files.checkpoint import load_checkpoint
from pipeline.model_files.onnx_export import read_metadata


def require_keys(found: Mapping[str, Any], keys: Sequence[str], path: str | Path, stage: str) -> None:
    """Raise a ``ValueError`` naming ``path`` and ``stage`` when ``found`` lacks any of ``keys``."""
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f"{path}: lacks {missing} (re-run {stage})")


def read_checkpoint(path: str | Path, what: str, stage: str) -> dict[str, Any]:
    """The checkpoint dict at ``path``, written by ``stage``, through the one checkpoint loader.

    :func:`~pipeline.model_files.checkpoint.load_checkpoint` loads with ``weights_only=True`` on CPU
    and refuses a file that is not a dict or holds a non-finite tensor.
    """
    return load_checkpoint(path, f"{what} checkpoint", missing_hint=f"run {stage} first")


def read_onnx_metadata(path: str | Path, keys: Sequence[str], stage: str) -> dict[str, Any]:
    """The ``export_onnx`` metadata of ``path``, checked to hold ``keys``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path} (run {stage} first)")
    meta = read_metadata(path)
    require_keys(meta, keys, path, stage)
    return meta


def model_thresholds(path: str | Path, what: str, stage: str) -> AuThresholds:
    """The AU decision thresholds a model file carries: ``model.pt``'s or an ONNX file's
    ``au_thresholds`` entry; 0.5 everywhere for a file without one (older, or a user's)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return thresholds_of(read_onnx_metadata(path, (), stage), str(path))
    return thresholds_of(read_checkpoint(path, what, stage), str(path))
