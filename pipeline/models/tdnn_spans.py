"""Run a TDNN over video frames' audio windows, sharing the convolutions of overlapping windows.

Windows of consecutive video frames overlap heavily (a 0.5 s window every 33 ms), so frames are
processed in runs: each run's windows are covered by one *span* of mel frames, the TDNN's
frame-level layers run once per span, and every window is pooled from it
(:meth:`pipeline.models.tdnn.TDNN.forward_windows`). Audio embeddings are zero where the frame has
no audio (``present`` is False), which is what the audio embedding store holds and what the fusion
head is trained with.

:func:`encode_frames` is the loop over a video's runs for any span encoder (the torch TDNN here,
the split ``tdnn.onnx`` in :mod:`pipeline.inference.audio`); :func:`embed_frames` runs it with a
torch TDNN.

Example:
    >>> import numpy as np, torch
    >>> from pipeline.audio.features import AudioConfig
    >>> from pipeline.audio.windows import track_audio
    >>> from pipeline.audio.decode import AudioTrack
    >>> from pipeline.models.tdnn import TDNN, TDNNConfig
    >>> cfg = AudioConfig()
    >>> track = AudioTrack(np.random.default_rng(0).normal(size=32000).astype(np.float32) * 0.1, 16000, 0.0)
    >>> audio = track_audio(track, n_frames=60, fps=30.0, cfg=cfg)
    >>> tdnn = TDNN(TDNNConfig(channels=(32, 32), kernel_sizes=(3, 3), dilations=(1, 2))).eval()
    >>> embed_frames(tdnn, audio, chunk_frames=16).shape
    (60, 512)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pipeline.audio.align import gather_windows
from pipeline.audio.windows import VideoAudio
from pipeline.models.tdnn import TDNN


@dataclass(frozen=True)
class SpanBatch:
    """Mel spans plus, per video frame, which span and offset its window starts at."""

    spans: np.ndarray       # (S, n_mels, L) float32
    span_index: np.ndarray  # (N,) int64
    offsets: np.ndarray     # (N,) int64, window start within its span
    present: np.ndarray     # (N,) bool
    context: int            # mel frames per window


def span_batch(runs: Sequence[tuple[VideoAudio, np.ndarray]]) -> SpanBatch:
    """Build a :class:`SpanBatch` from ``(audio, frame indices)`` runs; one span per run.

    Frames of a run should be close in time (e.g. consecutive), or the span grows long.
    """
    if not runs:
        raise ValueError("span_batch needs at least one run of frames")
    contexts = {audio.context for audio, _ in runs}
    if len(contexts) != 1:
        raise ValueError(f"all runs must use one window length, got {sorted(contexts)}")
    context = contexts.pop()
    firsts, lengths = [], []
    for audio, frames in runs:
        if len(frames) == 0:
            raise ValueError("span_batch got an empty run of frames")
        starts = audio.starts[frames]
        firsts.append(int(starts.min()))
        lengths.append(int(starts.max()) - firsts[-1] + context)
    length = max(lengths)
    spans = np.stack([
        gather_windows(audio.mel, np.array([first]), length)[0] for (audio, _), first in zip(runs, firsts)
    ])
    span_index = np.concatenate([np.full(len(frames), i, np.int64) for i, (_, frames) in enumerate(runs)])
    offsets = np.concatenate([audio.starts[frames] - first for (audio, frames), first in zip(runs, firsts)])
    present = np.concatenate([audio.present[frames] for audio, frames in runs])
    return SpanBatch(spans.astype(np.float32, copy=False), span_index, offsets.astype(np.int64), present, context)


def encode_spans(tdnn: TDNN, batch: SpanBatch, device: torch.device | str = "cpu") -> torch.Tensor:
    """Audio embeddings (N, E) of a batch's windows on ``device``, zero rows where audio is absent."""
    device = torch.device(device)
    embedding = tdnn.forward_windows(
        torch.from_numpy(batch.spans).to(device),
        torch.from_numpy(batch.span_index).to(device),
        torch.from_numpy(batch.offsets).to(device),
        batch.context,
    )
    present = torch.from_numpy(batch.present).to(device)
    return torch.where(present[:, None], embedding, torch.zeros_like(embedding))


SpanEncoder = Callable[[SpanBatch], np.ndarray]   # a batch's (N, E) float32 embeddings, zeros where absent


def encode_frames(
    encode: SpanEncoder,
    audio: VideoAudio,
    width: int,
    frames: Sequence[int] | np.ndarray | None = None,
    chunk_frames: int = 256,
) -> np.ndarray:
    """Embeddings (N, ``width``) float32 of ``frames`` (default all) of one video, zeros without audio.

    Frames are processed in runs of ``chunk_frames`` consecutive entries, one span each; a run
    without any audio is not encoded.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    index = np.arange(audio.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    out = np.zeros((len(index), width), np.float32)
    for begin in range(0, len(index), chunk_frames):
        run = index[begin:begin + chunk_frames]
        if audio.present[run].any():
            values = np.asarray(encode(span_batch([(audio, run)])))
            if values.shape != (len(run), width):
                raise ValueError(f"span encoder returned shape {values.shape}, expected ({len(run)}, {width})")
            out[begin:begin + len(run)] = values
    return out


def embed_frames(
    tdnn: TDNN,
    audio: VideoAudio,
    frames: Sequence[int] | np.ndarray | None = None,
    chunk_frames: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Audio embeddings (N, E) float32 of ``frames`` (default all) of one video by ``tdnn``, in eval mode.

    Frames are processed in runs of ``chunk_frames`` consecutive entries, one span each.
    """
    was_training = tdnn.training
    tdnn.eval()
    try:
        with torch.no_grad():
            return encode_frames(lambda batch: encode_spans(tdnn, batch, device).cpu().numpy(), audio,
                                 tdnn.cfg.embedding_dim, frames, chunk_frames)
    finally:
        tdnn.train(was_training)
