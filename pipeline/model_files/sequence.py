"""The sequence model's files (``train-sequence``): ``model.pt`` and ``sequence.onnx``.

- ``cache/sequence/model.pt``: ``{"arch", "state_dict", "modalities", "window", "stride", "config",
  "au_thresholds"}``
  in plain containers and tensors (``weights_only`` loadable); ``config`` is the training params
  without the export's tolerance. :func:`build_from_checkpoint` rebuilds the model.
- ``cache/sequence/sequence.onnx``: input ``features`` float32 (B,L,D); outputs ``au_logits``
  (B,L,12), ``expr_logits`` (B,L,7) and ``va_pred`` (B,L,2) in [-1, 1], dynamic batch and length;
  metadata ``modalities``, ``window``, ``stride``, ``feature_dim``, ``embedding_dim``,
  ``feature_layout``, ``au_thresholds`` (:func:`onnx_metadata`; the thresholds:
  :mod:`pipeline.au_thresholds`).

:func:`publish` writes both into the output directory together.

Example:
    >>> from pipeline.models.sequence import SequenceArch, SequenceModel
    >>> model = SequenceModel(SequenceArch(input_dim=8, d_model=16, heads=2))
    >>> ckpt = checkpoint_dict(model, "visual", 30, 10, {"window": 30, "parity_rtol": 1e-4})
    >>> ckpt["config"], ckpt["window"]
    ({'window': 30}, 30)
    >>> build_from_checkpoint(ckpt).arch.d_model
    16
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.au_thresholds import AuThresholds
from pipeline.fsio import atomic_path
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files.onnx_export import export_onnx
from pipeline.models.sequence import SequenceArch, SequenceModel, arch_to_dict

STAGE = "train-sequence"
CHECKPOINT_NAME = "model.pt"
ONNX_NAME = "sequence.onnx"
# sequence.onnx's outputs, in the order the model returns them
OUTPUT_NAMES: tuple[str, ...] = ("au_logits", "expr_logits", "va_pred")
# params of the export, not of the model: left out of model.pt's "config"
EXPORT_PARAMS: tuple[str, ...] = ("parity_rtol",)


def checkpoint_dict(model: SequenceModel, modalities: str, window: int, stride: int,
                    config: Mapping[str, Any], au_thresholds: AuThresholds | None = None) -> dict[str, Any]:
    """The ``model.pt`` contents: plain containers and tensors (``weights_only`` loadable).

    ``config`` is the training params; the export's tolerance is not part of the model, and leaving
    it out keeps ``model.pt`` the same bytes whatever the tolerance. ``au_thresholds``, when given, are
    the model's AU decision thresholds.
    """
    ckpt = {
        "arch": arch_to_dict(model.arch),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "modalities": modalities,
        "window": window,
        "stride": stride,
        "config": {k: v for k, v in config.items() if k not in EXPORT_PARAMS},
    }
    if au_thresholds is not None:
        ckpt[AU_THRESHOLDS] = au_thresholds.record()
    return ckpt


def build_from_checkpoint(ckpt: Mapping[str, Any]) -> SequenceModel:
    """Rebuild the model of a ``model.pt`` dict (``{"arch", "state_dict", ...}``), in eval mode."""
    missing = [key for key in ("arch", "state_dict") if key not in ckpt]
    if missing:
        raise ValueError(f"sequence checkpoint lacks key(s) {missing}")
    model = SequenceModel(SequenceArch(**ckpt["arch"]))
    absent = sorted(set(model.state_dict()) - set(ckpt["state_dict"]))
    if absent:
        # a model.pt from before the valence-arousal head lacks va_head.*: say so, not a key dump
        raise ValueError(f"sequence checkpoint lacks weights {absent[:4]}; a model made before the "
                         f"valence-arousal head cannot be run: train it again with train-sequence")
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def onnx_metadata(modalities: str, window: int, stride: int, feature_dim: int,
                  feature_layout: Sequence[Mapping[str, Any]],
                  au_thresholds: AuThresholds | None = None) -> dict[str, Any]:
    """What ``sequence.onnx`` needs to be used without the params: modalities, window, stride, the
    input's width and blocks (:func:`pipeline.inference.features.feature_layout`, the input contract),
    and the AU decision thresholds when given."""
    meta = {
        "modalities": modalities,
        "window": window,
        "stride": stride,
        "feature_dim": feature_dim,
        "embedding_dim": EMBEDDING_DIM,
        "feature_layout": [dict(block) for block in feature_layout],
    }
    if au_thresholds is not None:
        meta[AU_THRESHOLDS] = au_thresholds.record()
    return meta


def publish(out_dir: str | Path, model: SequenceModel, config: Mapping[str, Any], parity_rtol: float,
            feature_layout: Sequence[Mapping[str, Any]], au_thresholds: AuThresholds | None = None) -> None:
    """Write ``model.pt`` and ``sequence.onnx`` (parity-checked, tolerance ``train_sequence.parity_rtol``)
    into ``out_dir``, both or neither. ``config`` is the training params (``modalities``, ``window``,
    ``stride`` and ``seed`` among them); ``feature_layout`` the blocks of the model's input, which the
    caller takes from the input contract (:mod:`pipeline.inference.features`, which reads these files);
    ``au_thresholds`` go into both files."""
    model = model.cpu().eval()
    modalities, window, stride = config["modalities"], int(config["window"]), int(config["stride"])
    generator = torch.Generator().manual_seed(int(config["seed"]))
    # One frame short of a window: export_onnx checks parity one longer, at the full window.
    example = torch.randn(2, window - 1, model.arch.input_dim, generator=generator)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        # saved inside the directory that is published whole: no atomic rename of its own
        torch.save(checkpoint_dict(model, modalities, window, stride, config, au_thresholds), tmp / CHECKPOINT_NAME)
        axes = {0: "batch", 1: "length"}
        export_onnx(
            model, (example,), tmp / ONNX_NAME,
            input_names=["features"], output_names=list(OUTPUT_NAMES),
            dynamic_axes={"features": axes, **{name: axes for name in OUTPUT_NAMES}},
            metadata=onnx_metadata(modalities, window, stride, model.arch.input_dim, feature_layout,
                                   au_thresholds),
            rtol=parity_rtol, rtol_param="train_sequence.parity_rtol",
        )
