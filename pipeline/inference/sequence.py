"""Whole-video inference of the sequence model: overlapping-window averaging, from ONNX or torch.

``sliding_window_logits`` runs any ``run_fn`` (torch module or onnxruntime session, see
:func:`torch_run_fn` and :func:`onnx_run_fn`) over windows of ``window`` frames started every
``stride`` frames, with one extra window ending on the last frame, and averages the per-frame
outputs (AU and expression logits, valence-arousal) of all windows covering each frame. A video
shorter than ``window`` is run as one window of its own length, which is what a window padded to
full length with a key padding mask computes (attention ignores padded keys and the positional code
of frame ``t`` does not depend on the padding), so no padded frame can influence a real one.

:class:`SequenceRunner` ties a ``run_fn`` to the input layout the model was trained on
(modalities, window, stride, read from ``sequence.onnx``'s metadata or ``model.pt``); its
:meth:`~SequenceRunner.video_logits` composes the input (:func:`pipeline.inference.features.compose_features`)
and runs the windows, exactly as ``evaluate`` and ``predict`` both need.

Example:
    >>> import numpy as np
    >>> from pipeline.inference.features import compose_features
    >>> visual, present = np.ones((50, 512), np.float16), np.ones(50, bool)
    >>> feats = compose_features(visual, None, present, None, "visual")
    >>> run = lambda x: tuple(np.zeros(x.shape[:2] + (k,), np.float32) for k in (12, 7, 2))
    >>> au, expr, va = sliding_window_logits(run, feats, window=30, stride=10)
    >>> au.shape, expr.shape, va.shape
    ((50, 12), (50, 7), (50, 2))
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
from pipeline.model_files.sequence import OUTPUT_NAMES
from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]   # (au_logits, expr_logits, va_pred)
RunFn = Callable[[np.ndarray], Outputs]
# how wide each of the sequence model's outputs is, in the order of their names in sequence.onnx
OUTPUT_WIDTHS: tuple[int, ...] = (NUM_AUS, NUM_EXPRS, NUM_VA)


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
) -> Outputs:
    """Per-frame outputs of a whole video, each the mean of the windows covering the frame: AU logits
    (N,12), expression logits (N,7) and valence-arousal (N,2), float32.

    ``run_fn`` maps float32 (B, L, D) to ``(au (B, L, 12), expr (B, L, 7), va (B, L, 2))``;
    ``batch_size`` bounds how many windows go through it at once. Every frame is covered by at least
    one window. A mean of the windows' VA stays in [-1, 1], where each window's is.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(features)
    starts = window_starts(n, window, stride)
    length = min(window, n)
    sums = [np.zeros((n, width), dtype=np.float64) for width in OUTPUT_WIDTHS]
    count = np.zeros(n, dtype=np.int64)
    offsets = np.arange(length)
    for first in range(0, len(starts), batch_size):
        index = starts[first:first + batch_size, None] + offsets  # (b, length) frame numbers
        outputs = check_outputs(run_fn(np.ascontiguousarray(features[index])), index.shape)
        flat = index.ravel()
        for total, out, width in zip(sums, outputs, OUTPUT_WIDTHS):
            np.add.at(total, flat, out.reshape(-1, width))
        np.add.at(count, flat, 1)
    denom = count[:, None].astype(np.float64)
    au, expr, va = ((total / denom).astype(np.float32) for total in sums)
    return au, expr, va


def check_outputs(outputs: Any, windows: tuple[int, ...]) -> Outputs:
    """``run_fn``'s outputs for (B, L) ``windows`` as numpy arrays; refused unless they are three,
    (B, L, 12), (B, L, 7) and (B, L, 2)."""
    outputs = tuple(np.asarray(out) for out in outputs)
    expected = [tuple(windows) + (width,) for width in OUTPUT_WIDTHS]
    if [out.shape for out in outputs] != expected:
        raise ValueError(
            f"the sequence model gave shapes {[out.shape for out in outputs]} for windows {tuple(windows)}; "
            f"expected {expected} ({', '.join(OUTPUT_NAMES)}); a model made before the valence-arousal head "
            f"has two outputs: train it again with train-sequence"
        )
    return outputs  # type: ignore[return-value]


def torch_run_fn(model: Any, device: Any = "cpu") -> RunFn:
    """A ``run_fn`` over a torch sequence model (put in eval mode, no gradients)."""
    import torch

    model.eval()

    def run(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            au, expr, va = model(torch.from_numpy(batch).to(device))
        return au.float().cpu().numpy(), expr.float().cpu().numpy(), va.float().cpu().numpy()

    return run


def onnx_run_fn(session: Any) -> RunFn:
    """A ``run_fn`` over an onnxruntime session of ``sequence.onnx`` (input ``features``)."""

    def run(batch: np.ndarray) -> Outputs:
        au, expr, va = session.run(list(OUTPUT_NAMES), {"features": batch})
        return au, expr, va

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
    ) -> Outputs:
        """Per-frame AU (N,12) and expression (N,7) logits and valence-arousal (N,2) of one whole video
        from its (N,512) embeddings and (N,) flags."""
        modalities: Modalities = self.modalities  # type: ignore[assignment]  # checked when loaded
        features = compose_features(visual, audio, face_present, audio_present, modalities)
        return sliding_window_logits(self.run_fn, features, self.window, self.stride, batch_size)


def load_sequence_runner(path: str | Path, device: str = "auto", threads: int = 0) -> SequenceRunner:
    """The sequence model of ``sequence.onnx`` (onnxruntime) or ``model.pt`` (torch), by the file's suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        from pipeline.model_files.onnx_export import make_session

        meta = read_onnx_metadata(path, LAYOUT_KEYS, "train-sequence")
        session = make_session(path, device, threads)
        names = [out.name for out in session.get_outputs()]
        if names[:len(OUTPUT_NAMES)] != list(OUTPUT_NAMES):
            raise ValueError(f"{path}: outputs {names}, expected {list(OUTPUT_NAMES)}; a model made before the "
                             f"valence-arousal head has no va_pred: train it again with train-sequence")
        run_fn = onnx_run_fn(session)
    else:
        from pipeline.device import resolve_device
        from pipeline.model_files.sequence import build_from_checkpoint

        meta = read_checkpoint(path, "sequence model", "train-sequence")
        require_keys(meta, LAYOUT_KEYS, path, "train-sequence")
        torch_device = resolve_device(device)
        try:
            model = build_from_checkpoint(meta)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        run_fn = torch_run_fn(model.to(torch_device), torch_device)
    selected_modalities(str(meta["modalities"]))  # refuse an unknown layout before any frame is run
    return SequenceRunner(run_fn, str(meta["modalities"]), int(meta["window"]), int(meta["stride"]),
                          thresholds_of(meta, str(path)))
