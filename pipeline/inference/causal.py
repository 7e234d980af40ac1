"""The causal (low-latency) mode of the sequence model: frame ``t`` predicted from frames ``<= t`` only.

The offline mode (:meth:`pipeline.inference.sequence.SequenceRunner.video_logits`) averages every
window covering a frame, so frame ``t`` reads up to ``window - 1`` frames after it. Here frame
``t``'s logits are the last row of the window of ``window`` frames ending on ``t``
(:func:`causal_window_logits`, :func:`causal_logits` for a :class:`SequenceRunner`), so no later
frame can change them; :class:`CausalStream` is the same computation one frame at a time, as a
live source delivers them.

Frames ``t < window - 1`` have a shorter history. By default (``warmup="pad"``) their window is
filled on the left with "no face, no audio" frames (all-zero features, what
:func:`~pipeline.inference.features.compose_features` gives such a frame), so frame ``t`` always
sits at the last position, the one whose positional code every full window uses;
``warmup="short"`` runs the history ``[0, t]`` alone (length ``t + 1``, frame ``t`` at position
``t``). ``sequence.onnx`` has no padding-mask input, so these are the two choices it allows; "pad"
scores better on the demo (``benchmarks/low_latency.py``, docs/predict.md) and keeps every window
the same length, so all of a video's windows are batched.

The audio embedding of frame ``t`` comes from a log-mel window centred on ``t``: the mode reads
:func:`~pipeline.audio.windows.audio_lookahead_s` of audio after ``t`` unless the audio is delayed
(``audio_delay`` frames, :func:`delay_audio`, :func:`~pipeline.audio.windows.causal_audio_delay`).

Example:
    >>> import numpy as np
    >>> run = lambda x: tuple(x[..., :1].repeat(k, -1) for k in (12, 7, 2))   # frame-wise stand-in
    >>> feats = np.arange(5, dtype=np.float32)[:, None].repeat(3, 1)
    >>> au, expr, va = causal_window_logits(run, feats, window=3)
    >>> au[:, 0].tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> delay_audio(np.ones((4, 2)), np.ones(4, bool), 1)[1].tolist()
    [False, True, True, True]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipeline.inference.features import Modalities, compose_features
from pipeline.inference.sequence import OUTPUT_WIDTHS, Outputs, RunFn, SequenceRunner, check_outputs

Warmup = Literal["pad", "short"]
WARMUPS: tuple[str, ...] = ("pad", "short")


def causal_window_logits(
    run_fn: RunFn,
    features: np.ndarray,
    window: int,
    warmup: Warmup = "pad",
    batch_size: int = 64,
) -> Outputs:
    """Causal per-frame outputs, AU (N,12) and expression (N,7) logits and valence-arousal (N,2),
    float32: frame ``t``'s are the last row of the window of ``window`` frames ending on ``t``.

    Frames ``t < window - 1``: ``warmup="pad"`` fills their window on the left with all-zero
    feature rows ("no face, no audio"); ``"short"`` runs the history ``[0, t]`` alone. Full-length
    windows go through ``run_fn`` ``batch_size`` at a time; each "short" history is its own call.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if window < 1 or batch_size < 1:
        raise ValueError(f"window and batch_size must be >= 1, got window={window}, batch_size={batch_size}")
    check_warmup(warmup)
    n = len(features)
    outputs = tuple(np.empty((n, width), np.float32) for width in OUTPUT_WIDTHS)
    if warmup == "pad":
        # padded row t + window - 1 is frame t, so padded[t : t + window] is frame t's window
        source = np.concatenate([np.zeros((window - 1, features.shape[1]), np.float32), features])
        starts = np.arange(n, dtype=np.int64)
    else:
        for t in range(min(window - 1, n)):
            for out, row in zip(outputs, last_rows(run_fn, features[None, :t + 1])):
                out[t] = row[0]
        source = features
        starts = np.arange(max(n - window + 1, 0), dtype=np.int64)    # frame t's window starts at t - window + 1
    first_frame = n - len(starts)
    offsets = np.arange(window)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        frames = slice(first_frame + first, first_frame + first + len(chunk))
        for out, rows in zip(outputs, last_rows(run_fn, source[chunk[:, None] + offsets])):
            out[frames] = rows
    return outputs  # type: ignore[return-value]


def last_rows(run_fn: RunFn, windows: np.ndarray) -> Outputs:
    """The last position's outputs (B, 12), (B, 7), (B, 2) of ``run_fn`` on (B, L, D) ``windows``;
    other shapes refused."""
    outputs = check_outputs(run_fn(np.ascontiguousarray(windows, dtype=np.float32)), windows.shape[:2])
    au, expr, va = (out[:, -1] for out in outputs)
    return au, expr, va


def check_warmup(warmup: str) -> None:
    """Refuse a ``warmup`` other than ``"pad"`` and ``"short"``."""
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")


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


def causal_logits(
    runner: SequenceRunner,
    visual: np.ndarray | None,
    audio: np.ndarray | None,
    face_present: np.ndarray | None,
    audio_present: np.ndarray | None,
    batch_size: int = 64,
    warmup: Warmup = "pad",
    audio_delay: int = 0,
) -> Outputs:
    """Per-frame outputs (N,12), (N,7), (N,2) of one video in the causal mode, from the inputs
    :meth:`SequenceRunner.video_logits` takes.

    ``audio_delay`` frames shift the audio embeddings later (:func:`delay_audio`), so that frame
    ``t`` is given an audio window that ends by its time instead of the one centred on it.
    """
    modalities: Modalities = runner.modalities  # type: ignore[assignment]  # checked when loaded
    if audio_delay and runner.uses_audio():
        if audio is None or audio_present is None:
            raise ValueError(f"audio_delay={audio_delay} needs the audio embedding and audio_present")
        audio, audio_present = delay_audio(audio, audio_present, audio_delay)
    features = compose_features(visual, audio, face_present, audio_present, modalities)
    return causal_window_logits(runner.run_fn, features, runner.window, warmup, batch_size)


class CausalStream:
    """The causal mode one frame at a time: :meth:`push` a frame's inputs, get that frame's logits.

    It keeps the last ``window`` composed frames and runs one window per frame, so its result for
    frame ``t`` equals :func:`causal_logits`'s row ``t`` (same ``warmup``). With a delayed audio,
    push the audio embedding of frame ``t - audio_delay`` with frame ``t``.
    """

    def __init__(self, runner: SequenceRunner, warmup: Warmup = "pad") -> None:
        check_warmup(warmup)
        self.runner, self.warmup = runner, warmup
        self.frames_seen = 0
        self._history: np.ndarray | None = None   # (window, D): the last frames, oldest first

    def push(
        self,
        visual: np.ndarray | None,
        audio: np.ndarray | None,
        face_present: bool,
        audio_present: bool,
    ) -> Outputs:
        """The AU (12,) and expression (7,) logits and valence-arousal (2,) of the new frame, from its (E,)
        embeddings and flags and the frames before it."""
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
        au, expr, va = last_rows(self.runner.run_fn, history[None])
        return au[0], expr[0], va[0]
