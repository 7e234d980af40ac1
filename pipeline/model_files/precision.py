"""Which numeric precision an exported model runs at, and where that model's file lives.

Every exported model is written in float32 (``visual.onnx``, ``tdnn.onnx``); a lower-precision
copy lives beside it under the same stem with the precision's tag before ``.onnx``:
``visual.fp16.onnx`` (:mod:`pipeline.model_files.float16`), ``visual.int8.onnx`` and
``tdnn.int8.onnx`` (:mod:`pipeline.model_files.int8`). :data:`PRECISION_TAGS` is the one list of
precisions and their file tags; each model's module (:mod:`pipeline.model_files.visual`,
:mod:`pipeline.model_files.audio`) says which copies it publishes and how each is made.

Example:
    >>> precision_path("cache/onnx/visual.onnx", "int8").as_posix()
    'cache/onnx/visual.int8.onnx'
    >>> precision_path("cache/onnx/visual.onnx", "float16").as_posix()
    'cache/onnx/visual.fp16.onnx'
    >>> precision_path("cache/audio/tdnn.onnx", "float32").as_posix()
    'cache/audio/tdnn.onnx'
    >>> precision_path("cache/onnx/visual.onnx", "int4")
    Traceback (most recent call last):
    ...
    ValueError: precision must be one of ['float32', 'float16', 'int8'], got 'int4'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

DEFAULT_PRECISION = "float32"
# precision -> tag between the float model's stem and ".onnx" ("" = the float32 model itself)
PRECISION_TAGS: dict[str, str] = {"float32": "", "float16": ".fp16", "int8": ".int8"}


def check_precision(precision: str, choices: tuple[str, ...] = tuple(PRECISION_TAGS)) -> None:
    """Raise ``ValueError`` naming the choices when ``precision`` is not one of ``choices``."""
    if precision not in choices:
        raise ValueError(f"precision must be one of {list(choices)}, got {precision!r}")


def precision_path(float_path: str | Path, precision: str) -> Path:
    """The file of ``float_path``'s model at ``precision``: ``visual.onnx`` -> ``visual.int8.onnx`` beside it."""
    check_precision(precision)
    path = Path(float_path)
    return path.with_name(path.name.removesuffix(".onnx") + PRECISION_TAGS[precision] + ".onnx")


def precision_model(float_path: str | Path, precision: str, copies: Mapping[str, str]) -> Path:
    """:func:`precision_path` of a model whose lower-precision ``copies`` map each precision to how it is made.

    A precision the model has no copy at is a ``ValueError`` naming the ones it has; a copy is
    checked to exist (``FileNotFoundError`` naming the file and how it is made). The float32 model
    itself is left to its reader to check.
    """
    check_precision(precision, (DEFAULT_PRECISION, *copies))
    path = precision_path(float_path, precision)
    if precision != DEFAULT_PRECISION and not path.is_file():
        raise FileNotFoundError(f"{precision} model not found: {path} ({copies[precision]})")
    return path


def recorded_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's params as its output records and fingerprints them: all but ``precision``.

    The model file records the precision itself (its hash, and the ``quantization`` entry of its
    metadata), and leaving the key out keeps a float32 output the same as before the choice existed.
    """
    return {key: value for key, value in params.items() if key != "precision"}
