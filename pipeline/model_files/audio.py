"""The audio model's files (``train-audio``): ``model.pt`` (TDNN + fusion head), ``tdnn.onnx`` and ``tdnn.int8.onnx``.

- ``cache/audio/model.pt``: ``{"tdnn_arch": dict, "tdnn": state_dict, "fusion_arch": dict,
  "fusion": state_dict, "audio_config": dict, "au_thresholds": dict}`` in plain containers and
  tensors (``weights_only`` loadable); :func:`load_tdnn`, :func:`load_fusion_head` and
  :func:`load_audio_config` rebuild its parts; ``au_thresholds`` are the fusion head's AU decision
  thresholds (:mod:`pipeline.au_thresholds`; the TDNN has no AU output, so ``tdnn.onnx`` has none).
  The fusion head returns ``(au_logits, expr_logits, va_pred)``; its ``va_head`` weights are part of
  ``"fusion"``. It is run from this file only (the ONNX files hold the TDNN, whose output is the
  embedding), so no ONNX output carries ``va_pred`` here.
- ``cache/audio/tdnn.onnx``: input ``mel`` float32 (B,64,T), output ``embedding`` (B,512); metadata
  ``audio_config``, ``context_frames``, ``receptive_field``, ``embedding_dim``
  (:func:`onnx_metadata`), so it runs without the params.
- ``cache/audio/tdnn.int8.onnx``: its static int8 quantization (convolutions only), calibrated on
  log-mel windows of the training videos (:func:`quantize_tdnn`).

:func:`publish` writes the three into the output directory together, all or nothing;
:func:`model_path` locates the file a backend runs at a precision.

Example:
    >>> import tempfile
    >>> from pipeline.audio.features import AudioConfig
    >>> from pipeline.models.fusion import FusionConfig, FusionHead
    >>> from pipeline.models.tdnn import TDNN, TDNNConfig
    >>> tdnn = TDNN(TDNNConfig(channels=(8, 8), kernel_sizes=(3, 1), dilations=(1, 1)))
    >>> ckpt = checkpoint_dict(tdnn, FusionHead(FusionConfig(hidden=16)), AudioConfig())
    >>> sorted(ckpt) == sorted(CHECKPOINT_KEYS)
    True
    >>> load_tdnn(ckpt).cfg.channels
    (8, 8)
    >>> model_path("cache/audio", "onnx").as_posix()
    'cache/audio/tdnn.onnx'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.au_thresholds import AuThresholds
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio
from pipeline.config import from_dict, to_dict
from pipeline.fsio import atomic_path
from pipeline.model_files.loading import read_checkpoint, read_onnx_metadata
from pipeline.model_files.int8 import CalibrationConfig, Feed, QuantSettings, int8_path, quantize_onnx
from pipeline.model_files.onnx_export import export_onnx
from pipeline.model_files.precision import DEFAULT_PRECISION, precision_model
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.tdnn import TDNN, TDNNConfig

STAGE = "train-audio"
CHECKPOINT_NAME = "model.pt"
ONNX_NAME = "tdnn.onnx"
BACKEND_FILES: dict[str, str] = {"onnx": ONNX_NAME, "torch": CHECKPOINT_NAME}
CHECKPOINT_KEYS: tuple[str, ...] = ("tdnn_arch", "tdnn", "fusion_arch", "fusion", "audio_config")
# the lower-precision copies of tdnn.onnx, and how each is made (for the error that reports one missing)
INT8_HOW = "train-audio writes it next to tdnn.onnx; re-run train-audio"
COPIES: dict[str, str] = {"int8": INT8_HOW}
PRECISIONS: tuple[str, ...] = (DEFAULT_PRECISION, *COPIES)
# the TDNN keeps its pooling and projection in float32, so that inference can split the graph there
# (pipeline.inference.audio); they are a small share of its work
TDNN_SETTINGS = QuantSettings(operators=("Conv",))


# -- model.pt ----------------------------------------------------------------------------------------


def checkpoint_dict(tdnn: TDNN, fusion: FusionHead, audio_config: AudioConfig,
                    au_thresholds: AuThresholds | None = None) -> dict[str, Any]:
    """The ``model.pt`` contents (plain containers and tensors, ``weights_only`` loadable), with the
    fusion head's AU decision thresholds when given."""
    ckpt = {
        "tdnn_arch": to_dict(tdnn.cfg),
        "tdnn": {k: v.detach().cpu() for k, v in tdnn.state_dict().items()},
        "fusion_arch": to_dict(fusion.cfg),
        "fusion": {k: v.detach().cpu() for k, v in fusion.state_dict().items()},
        "audio_config": to_dict(audio_config),
    }
    if au_thresholds is not None:
        ckpt[AU_THRESHOLDS] = au_thresholds.record()
    return ckpt


def read_model(path: str | Path) -> dict[str, Any]:
    """The ``model.pt`` dict at ``path`` (a missing file names ``train-audio``)."""
    return read_checkpoint(path, "audio model", STAGE)


def _check_checkpoint(ckpt: Mapping[str, Any]) -> None:
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"audio checkpoint lacks {missing}; expected keys {list(CHECKPOINT_KEYS)}")


def load_tdnn(ckpt: Mapping[str, Any]) -> TDNN:
    """The trained :class:`TDNN` of an audio checkpoint dict, in eval mode."""
    _check_checkpoint(ckpt)
    model = TDNN(from_dict(TDNNConfig, ckpt["tdnn_arch"], where="checkpoint:tdnn_arch"))
    model.load_state_dict(ckpt["tdnn"])
    return model.eval()


def load_fusion_head(ckpt: Mapping[str, Any]) -> FusionHead:
    """The trained :class:`FusionHead` of an audio checkpoint dict, in eval mode."""
    _check_checkpoint(ckpt)
    head = FusionHead(from_dict(FusionConfig, ckpt["fusion_arch"], where="checkpoint:fusion_arch"))
    absent = sorted(set(head.state_dict()) - set(ckpt["fusion"]))
    if absent:
        # a model.pt from before the valence-arousal head lacks va_head.*: say so, not a key dump
        raise ValueError(f"audio checkpoint's fusion head lacks weights {absent[:4]}; a model made before the "
                         f"valence-arousal head cannot be run: train it again with train-audio")
    head.load_state_dict(ckpt["fusion"])
    return head.eval()


def load_audio_config(ckpt: Mapping[str, Any]) -> AudioConfig:
    """The :class:`AudioConfig` (log-mel and window parameters) the checkpoint's TDNN was trained with."""
    _check_checkpoint(ckpt)
    return from_dict(AudioConfig, ckpt["audio_config"], where="checkpoint:audio_config")


def read_audio_config(path: str | Path) -> AudioConfig:
    """The audio frontend config a TDNN was trained with, from ``tdnn.onnx``'s metadata or ``model.pt``."""
    path = Path(path)
    if path.suffix == ".onnx":
        meta = read_onnx_metadata(path, ("audio_config",), STAGE)
        return from_dict(AudioConfig, meta["audio_config"], where=f"{path}:audio_config")
    return load_audio_config(read_model(path))


# -- tdnn.onnx and its int8 copy ---------------------------------------------------------------------


def onnx_metadata(tdnn: TDNN, audio_config: AudioConfig) -> dict[str, Any]:
    """What ``tdnn.onnx`` needs to be used without the params: the audio config and window length."""
    return {
        "audio_config": to_dict(audio_config),
        "context_frames": audio_config.context_frames,
        "receptive_field": tdnn.receptive_field,
        "embedding_dim": tdnn.cfg.embedding_dim,
    }


def publish(out_dir: str | Path, tdnn: TDNN, fusion: FusionHead, audio_config: AudioConfig, seed: int,
            parity_rtol: float, calibration: Mapping[str, VideoAudio] | None = None,
            int8_windows: int = 256, au_thresholds: AuThresholds | None = None) -> None:
    """Write ``model.pt`` (with the fusion head's ``au_thresholds`` when given) and ``tdnn.onnx``
    (parity-checked, tolerance ``train_audio.parity_rtol``) into ``out_dir``, all or nothing.

    With ``calibration`` (video name -> soundtrack, the training videos), also ``tdnn.int8.onnx``:
    its static int8 quantization on ``int8_windows`` of their windows drawn with ``seed``.
    """
    tdnn, fusion = tdnn.cpu().eval(), fusion.cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(2, audio_config.n_mels, audio_config.context_frames, generator=generator) * 4.0 + 8.0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        # saved inside the directory that is published whole: no atomic rename of its own
        torch.save(checkpoint_dict(tdnn, fusion, audio_config, au_thresholds), tmp / CHECKPOINT_NAME)
        export_onnx(
            tdnn, (example,), tmp / ONNX_NAME,
            input_names=["mel"], output_names=["embedding"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}},
            metadata=onnx_metadata(tdnn, audio_config),
            rtol=parity_rtol, rtol_param="train_audio.parity_rtol",
        )
        if calibration is not None:
            quantize_tdnn(tmp / ONNX_NAME, calibration, int8_path(tmp / ONNX_NAME),
                          CalibrationConfig(n_crops=int8_windows, seed=seed))


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
    """Write the int8 QDQ model of ``tdnn.onnx`` (default :func:`~pipeline.model_files.int8.int8_path`),
    calibrated on ``audios``.

    ``audios`` maps video names to their soundtracks' log-mel (the training videos); ``config.n_crops``
    windows are drawn from their frames with audio and recorded by (video, frame) in the metadata.
    By default only the convolutions are quantized (:data:`TDNN_SETTINGS`). Returns the ``quantization``
    metadata plus ``max_abs_diff`` of ``embedding`` against the float model on those windows.
    """
    windows = calibration_windows(audios, config.n_crops, config.seed)
    calibration = {"videos": sorted({name for name, _ in windows}), "seed": config.seed, "method": "minmax",
                   "n_windows": len(windows), "windows": [[name, frame] for name, frame in windows]}
    return quantize_onnx(Path(float_path), out_path, calibration, lambda size: _window_batches(audios, windows, size),
                         config.batch_size, settings)


# -- which file runs ---------------------------------------------------------------------------------


def model_path(model_dir: str | Path, backend: str, precision: str = DEFAULT_PRECISION) -> Path:
    """The ``train-audio`` output file a backend runs: ``tdnn.onnx`` (onnx; ``tdnn.int8.onnx`` at
    precision int8, checked to exist) or ``model.pt`` (torch, float32 only)."""
    if backend not in BACKEND_FILES:
        raise ValueError(f"audio backend must be one of {sorted(BACKEND_FILES)}, got {backend!r}")
    path = Path(model_dir) / BACKEND_FILES[backend]
    if precision == DEFAULT_PRECISION:
        return path
    if backend != "onnx":
        raise ValueError(f"audio backend {backend!r} runs {path.name} in float32 only, got precision {precision!r}")
    return onnx_model(path, precision)


def onnx_model(float_path: str | Path, precision: str) -> Path:
    """The file of ``tdnn.onnx`` at ``precision`` (:data:`PRECISIONS`); a copy is checked to exist."""
    return precision_model(float_path, precision, COPIES)
