"""Whole-video inference of the sequence model: overlapping-window averaging, from ONNX or torch.

``sliding_window_logits`` runs any ``run_fn`` (torch module or onnxruntime session, see
:func:`torch_run_fn` and :func:`onnx_run_fn`) over windows of ``window`` frames started every
``stride`` frames, with one extra window ending on the last frame, and averages the per-frame
logits of all windows covering each frame. A video shorter than ``window`` is run as one window of
its own length, which is what a window padded to full length with a key padding mask computes
(attention ignores padded keys and the positional code of frame ``t`` does not depend on the
padding), so no padded frame can influence a real one.

:class:`SequenceRunner` ties a ``run_fn`` to the input layout the model was trained on
(modalities, window, stride, read from ``sequence.onnx``'s metadata or ``model.pt``); its
:meth:`~SequenceRunner.video_logits` composes the input (:func:`pipeline.inference.features.compose_features`)
and runs the windows, exactly as ``evaluate`` and ``predict`` both need.

Example:
    >>> import numpy as np
    >>> from pipeline.inference.features import compose_features
    >>> visual, present = np.ones((50, 512), np.float16), np.ones(50, bool)
    >>> feats = compose_features(visual, None, present, None, "visual")
    >>> run = lambda x: (np.zeros(x.shape[:2] + (12,), np.float32), np.zeros(x.shape[:2] + (7,), np.float32))
    >>> au, expr = sliding_window_logits(run, feats, window=30, stride=10)
    >>> au.shape, expr.shape
    ((50, 12), (50, 7))
    >>> window_starts(50, window=30, stride=10).tolist()
    [0, 10, 20]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.au_thresholds import AuThresholds, fixed_thresholds, thresholds_of
from pipeline.inference.features import Modalities, compose_features, selected_modalities
from pipeline.model_files.loading import read_checkpoint, read_onnx_metadata, require_keys
from pipeline.labels import NUM_AUS, NUM_EXPRS

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def window_starts(n_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the windows covering ``n_frames``: every ``stride``, plus one ending on the last frame.

    A ``stride`` longer than ``window`` would skip frames, so the step is ``min(stride, window)``.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if n_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {n_frames}")
    if n_frames <= window:
        return np.zeros(1, dtype=np.int64)
    last = n_frames - window
    starts = np.arange(0, last + 1, min(stride, window), dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)  # the tail: a full window ending on the last frame
    return starts


def sliding_window_logits(
    run_fn: RunFn,
    features: np.ndarray,
    window: int,
    stride: int,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame logits of a whole video: windows' logits averaged per frame; (N,12), (N,7) float32.

    ``run_fn`` maps float32 (B, L, D) to ``(au (B, L, 12), expr (B, L, 7))``; ``batch_size`` bounds
    how many windows go through it at once. Every frame is covered by at least one window.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(features)
    starts = window_starts(n, window, stride)
    length = min(window, n)
    au_sum = np.zeros((n, NUM_AUS), dtype=np.float64)
    expr_sum = np.zeros((n, NUM_EXPRS), dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    offsets = np.arange(length)
    for first in range(0, len(starts), batch_size):
        index = starts[first:first + batch_size, None] + offsets  # (b, length) frame numbers
        au, expr = run_fn(np.ascontiguousarray(features[index]))
        au, expr = np.asarray(au), np.asarray(expr)
        if au.shape != index.shape + (NUM_AUS,) or expr.shape != index.shape + (NUM_EXPRS,):
            raise ValueError(
                f"run_fn returned shapes {au.shape} and {expr.shape} for input {features[index].shape}; "
                f"expected (B, L, {NUM_AUS}) and (B, L, {NUM_EXPRS})"
            )
        flat = index.ravel()
        np.add.at(au_sum, flat, au.reshape(-1, NUM_AUS))
        np.add.at(expr_sum, flat, expr.reshape(-1, NUM_EXPRS))
        np.add.at(count, flat, 1)
    denom = count[:, None].astype(np.float64)
    return (au_sum / denom).astype(np.float32), (expr_sum / denom).astype(np.float32)


def torch_run_fn(model: Any, device: Any = "cpu") -> RunFn:
    """A ``run_fn`` over a torch sequence model (put in eval mode, no gradients)."""
    import torch

    model.eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            au, expr = model(torch.from_numpy(batch).to(device))
        return au.float().cpu().numpy(), expr.float().cpu().numpy()

    return run


def onnx_run_fn(session: Any) -> RunFn:
    """A ``run_fn`` over an onnxruntime session of ``sequence.onnx`` (input ``features``)."""

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        au, expr = session.run(["au_logits", "expr_logits"], {"features": batch})
        return au, expr

    return run


# what a sequence model file must say about the input it was trained on
LAYOUT_KEYS: tuple[str, ...] = ("modalities", "window", "stride")


@dataclass(frozen=True)
class SequenceRunner:
    """The sequence model as a window function, with the input layout it was trained on and the AU
    decision thresholds its file carries (0.5 everywhere for a file without them)."""

    run_fn: RunFn
    modalities: str
    window: int
    stride: int
    au_thresholds: AuThresholds = field(default_factory=fixed_thresholds)

    def uses_audio(self) -> bool:
        """Whether the model's input holds the audio embedding (modalities ``audio`` or ``both``)."""
        return "audio" in selected_modalities(self.modalities)

    def video_logits(
        self,
        visual: np.ndarray | None,
        audio: np.ndarray | None,
        face_present: np.ndarray | None,
        audio_present: np.ndarray | None,
        batch_size: int = 64,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame logits (N,12), (N,7) of one whole video from its (N,512) embeddings and (N,) flags."""
        modalities: Modalities = self.modalities  # type: ignore[assignment]  # checked when loaded
        features = compose_features(visual, audio, face_present, audio_present, modalities)
        return sliding_window_logits(self.run_fn, features, self.window, self.stride, batch_size)


def load_sequence_runner(path: str | Path, device: str = "auto", threads: int = 0) -> SequenceRunner:
    """The sequence model of ``sequence.onnx`` (onnxruntime) or ``model.pt`` (torch), by the file's suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        from pipeline.model_files.onnx_export import make_session

        meta = read_onnx_metadata(path, LAYOUT_KEYS, "train-sequence")
        run_fn = onnx_run_fn(make_session(path, device, threads))
    else:
        from pipeline.device import resolve_device
        from pipeline.model_files.sequence import build_from_checkpoint

        meta = read_checkpoint(path, "sequence model", "train-sequence")
        require_keys(meta, LAYOUT_KEYS, path, "train-sequence")
        torch_device = resolve_device(device)
        run_fn = torch_run_fn(build_from_checkpoint(meta).to(torch_device), torch_device)
    selected_modalities(str(meta["modalities"]))  # refuse an unknown layout before any frame is run
    return SequenceRunner(run_fn, str(meta["modalities"]), int(meta["window"]), int(meta["stride"]),
                          thresholds_of(meta, str(path)))
