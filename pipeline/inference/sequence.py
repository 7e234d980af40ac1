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

The causal (low-latency) mode, :func:`causal_window_logits` and :meth:`SequenceRunner.causal_logits`,
predicts frame ``t`` from frames ``<= t`` only: the window of ``window`` frames ending on ``t``, its
last row. Frames ``t < window - 1`` have a shorter history; by default (``warmup="pad"``) their
window is filled on the left with "no face, no audio" frames (all-zero features, what
:func:`~pipeline.inference.features.compose_features` gives such a frame), so frame ``t`` always
sits at the last position, the one whose positional code the full windows use;
``warmup="short"`` runs the history ``[0, t]`` alone (length ``t + 1``, frame ``t`` at position
``t``). The ONNX model has no padding-mask input, so these are the two choices it allows; "pad"
scores better on the demo (``benchmarks/low_latency.py``, docs/predict.md). :class:`CausalStream`
is the same computation one frame at a time, as a live source delivers them. The audio embedding
of frame ``t`` comes from a log-mel window centred on ``t``, so the mode sees
:func:`~pipeline.audio.windows.audio_lookahead_s` of future audio unless the audio is delayed
(``audio_delay``, :func:`delay_audio`).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from pipeline.inference.features import Modalities, compose_features, selected_modalities
from pipeline.inference.loading import read_checkpoint, read_onnx_metadata, require_keys
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
        au, expr = _run_checked(run_fn, np.ascontiguousarray(features[index]))
        flat = index.ravel()
        np.add.at(au_sum, flat, au.reshape(-1, NUM_AUS))
        np.add.at(expr_sum, flat, expr.reshape(-1, NUM_EXPRS))
        np.add.at(count, flat, 1)
    denom = count[:, None].astype(np.float64)
    return (au_sum / denom).astype(np.float32), (expr_sum / denom).astype(np.float32)


def _run_checked(run_fn: RunFn, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``run_fn(batch)`` as arrays, refused unless shaped (B, L, 12) and (B, L, 7) for a (B, L, D) batch."""
    au, expr = run_fn(batch)
    au, expr = np.asarray(au), np.asarray(expr)
    if au.shape != batch.shape[:2] + (NUM_AUS,) or expr.shape != batch.shape[:2] + (NUM_EXPRS,):
        raise ValueError(
            f"run_fn returned shapes {au.shape} and {expr.shape} for input {batch.shape}; "
            f"expected (B, L, {NUM_AUS}) and (B, L, {NUM_EXPRS})"
        )
    return au, expr


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


Warmup = Literal["pad", "short"]
WARMUPS: tuple[str, ...] = ("pad", "short")


def causal_window_logits(
    run_fn: RunFn,
    features: np.ndarray,
    window: int,
    warmup: Warmup = "pad",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Causal per-frame logits (N,12), (N,7) float32: frame ``t``'s are the last row of the window
    of ``window`` frames ending on ``t``.

    Frames ``t < window - 1``: ``warmup="pad"`` fills their window on the left with all-zero
    feature rows ("no face, no audio"); ``"short"`` runs the history ``[0, t]`` alone. Full-length
    windows go through ``run_fn`` ``batch_size`` at a time; each "short" history is its own call.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if window < 1 or batch_size < 1:
        raise ValueError(f"window and batch_size must be >= 1, got window={window}, batch_size={batch_size}")
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    n = len(features)
    au = np.empty((n, NUM_AUS), np.float32)
    expr = np.empty((n, NUM_EXPRS), np.float32)
    if warmup == "pad":
        # padded row t + window - 1 is frame t; padded[t : t + window] is frame t's window
        source = np.concatenate([np.zeros((window - 1, features.shape[1]), np.float32), features])
        ends = np.arange(n, dtype=np.int64)
    else:
        for t in range(min(window - 1, n)):
            short_au, short_expr = _run_checked(run_fn, np.ascontiguousarray(features[None, :t + 1]))
            au[t], expr[t] = short_au[0, -1], short_expr[0, -1]
        source = features
        ends = np.arange(window - 1, n, dtype=np.int64) - (window - 1)   # window starts in ``features``
    offsets = np.arange(window)
    first_frame = n - len(ends)
    for first in range(0, len(ends), batch_size):
        starts = ends[first:first + batch_size]
        batch_au, batch_expr = _run_checked(run_fn, np.ascontiguousarray(source[starts[:, None] + offsets]))
        frames = slice(first_frame + first, first_frame + first + len(starts))
        au[frames], expr[frames] = batch_au[:, -1], batch_expr[:, -1]
    return au, expr


def delay_audio(audio: np.ndarray, audio_present: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The audio embeddings (N, E) and flags (N,) moved ``frames`` later: frame ``t`` gets frame
    ``t - frames``'s, and the first ``frames`` frames have no audio."""
    if frames < 0:
        raise ValueError(f"the audio delay must be >= 0 frames, got {frames}")
    audio, audio_present = np.asarray(audio), np.asarray(audio_present, dtype=bool)
    delayed, present = np.zeros_like(audio), np.zeros_like(audio_present)
    if frames < len(audio):
        delayed[frames:], present[frames:] = audio[:len(audio) - frames], audio_present[:len(audio) - frames]
    return delayed, present


class CausalStream:
    """The causal mode one frame at a time: :meth:`push` a frame's inputs, get that frame's logits.

    It keeps the last ``window`` composed frames and runs one window per frame, so its result for
    frame ``t`` equals :meth:`SequenceRunner.causal_logits`'s row ``t`` (same ``warmup``). With a
    delayed audio, push the audio embedding of frame ``t - audio_delay`` with frame ``t``.
    """

    def __init__(self, runner: SequenceRunner, warmup: Warmup = "pad") -> None:
        if warmup not in WARMUPS:
            raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
        self.runner, self.warmup = runner, warmup
        self.frames_seen = 0
        self._history: np.ndarray | None = None   # (window, D): the last frames, oldest first

    def push(
        self,
        visual: np.ndarray | None,
        audio: np.ndarray | None,
        face_present: bool,
        audio_present: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logits (12,), (7,) of the new frame from its (E,) embeddings and flags and the frames before it."""
        modalities: Modalities = self.runner.modalities  # type: ignore[assignment]  # checked when loaded
        row = compose_features(
            None if visual is None else np.asarray(visual)[None], None if audio is None else np.asarray(audio)[None],
            np.array([face_present]), np.array([audio_present]), modalities,
        )[0]
        if self._history is None:
            self._history = np.zeros((self.runner.window, len(row)), np.float32)
        self._history[:-1] = self._history[1:]
        self._history[-1] = row
        self.frames_seen += 1
        history = self._history
        if self.warmup == "short" and self.frames_seen < self.runner.window:
            history = history[-self.frames_seen:]
        au, expr = _run_checked(self.runner.run_fn, np.ascontiguousarray(history[None]))
        return au[0, -1], expr[0, -1]


# what a sequence model file must say about the input it was trained on
LAYOUT_KEYS: tuple[str, ...] = ("modalities", "window", "stride")


@dataclass(frozen=True)
class SequenceRunner:
    """The sequence model as a window function, with the input layout it was trained on."""

    run_fn: RunFn
    modalities: str
    window: int
    stride: int

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

    def causal_logits(
        self,
        visual: np.ndarray | None,
        audio: np.ndarray | None,
        face_present: np.ndarray | None,
        audio_present: np.ndarray | None,
        batch_size: int = 64,
        warmup: Warmup = "pad",
        audio_delay: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame logits (N,12), (N,7) of the causal mode: frame ``t`` from frames ``<= t`` only.

        ``audio_delay`` frames shift the audio embeddings later (:func:`delay_audio`), so that frame
        ``t`` is given the audio window that ends before it instead of the one centred on it.
        """
        modalities: Modalities = self.modalities  # type: ignore[assignment]  # checked when loaded
        if audio_delay and self.uses_audio():
            if audio is None or audio_present is None:
                raise ValueError(f"audio_delay={audio_delay} needs the audio embedding and audio_present")
            audio, audio_present = delay_audio(audio, audio_present, audio_delay)
        features = compose_features(visual, audio, face_present, audio_present, modalities)
        return causal_window_logits(self.run_fn, features, self.window, warmup, batch_size)


def load_sequence_runner(path: str | Path, device: str = "auto", threads: int = 0) -> SequenceRunner:
    """The sequence model of ``sequence.onnx`` (onnxruntime) or ``model.pt`` (torch), by the file's suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        from pipeline.export import make_session

        meta = read_onnx_metadata(path, LAYOUT_KEYS, "train-sequence")
        run_fn = onnx_run_fn(make_session(path, device, threads))
    else:
        from pipeline.device import resolve_device
        from pipeline.models.sequence import build_from_checkpoint

        meta = read_checkpoint(path, "sequence model", "train-sequence")
        require_keys(meta, LAYOUT_KEYS, path, "train-sequence")
        torch_device = resolve_device(device)
        run_fn = torch_run_fn(build_from_checkpoint(meta).to(torch_device), torch_device)
    selected_modalities(str(meta["modalities"]))  # refuse an unknown layout before any frame is run
    return SequenceRunner(run_fn, str(meta["modalities"]), int(meta["window"]), int(meta["stride"]))
