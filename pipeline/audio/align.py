"""Timestamp alignment of mel frames to video frames (pure functions over arrays).

Video frame ``i`` is shown at ``t_i`` seconds on the video clock (``i / fps``, or the container's
presentation timestamps when known). Mel frame ``j`` of a track starting at ``start_s`` is centred at
``start_s + j * hop_s``. Frame ``i`` gets the ``context`` mel frames centred on the mel frame nearest
to ``t_i`` (so the window centre is within half a hop of ``t_i``, whatever the frame rate), with
zeros where the window runs past either end of the audio. A frame is *present* when its centre mel
frame exists, i.e. the audio covers its presentation time.

Example:
    >>> import numpy as np
    >>> times = frame_times(3, fps=25.0)                     # 0, 40, 80 ms
    >>> starts = window_starts(times, start_s=0.0, hop_s=0.005, context=5)
    >>> starts.tolist()                                       # centres 0, 8, 16 minus 5 // 2
    [-2, 6, 14]
    >>> gather_windows(np.ones((64, 10), np.float32), starts, 5)[:, 0, :].tolist()
    [[0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    >>> window_present(times, 0.0, 0.005, n_mel_frames=10).tolist()
    [True, True, False]
"""

from __future__ import annotations

import numpy as np


def frame_times(n_frames: int, fps: float, pts_s: np.ndarray | None = None) -> np.ndarray:
    """Presentation times (s) of frames ``0..n_frames-1``: the given timestamps, else ``i / fps``.

    ``pts_s`` (sorted, seconds from the first frame) is used when its values are distinct; frames
    beyond its end continue at ``1 / fps`` from the last timestamp.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    regular = np.arange(n_frames, dtype=np.float64) / fps
    if pts_s is None or len(pts_s) == 0:
        return regular
    pts = np.sort(np.asarray(pts_s, dtype=np.float64))[:n_frames]
    if not np.isfinite(pts).all() or (np.diff(pts) <= 0).any():
        return regular
    tail = pts[-1] + np.arange(1, n_frames - len(pts) + 1, dtype=np.float64) / fps
    return np.concatenate([pts, tail])


def centre_indices(times: np.ndarray, start_s: float, hop_s: float) -> np.ndarray:
    """Index (int64) of the mel frame whose centre is nearest to each time; may lie outside the track."""
    if not hop_s > 0:
        raise ValueError(f"hop_s must be positive, got {hop_s}")
    # floor(x + 0.5) rounds halves up, the same way for every platform and sign.
    return np.floor((np.asarray(times, dtype=np.float64) - start_s) / hop_s + 0.5).astype(np.int64)


def window_starts(times: np.ndarray, start_s: float, hop_s: float, context: int) -> np.ndarray:
    """First mel frame (int64, may be negative) of the ``context``-frame window centred on each time."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of mel frames, got {context}")
    return centre_indices(times, start_s, hop_s) - context // 2


def window_present(times: np.ndarray, start_s: float, hop_s: float, n_mel_frames: int) -> np.ndarray:
    """True where the audio covers the frame's time (its centre mel frame is inside the track)."""
    centre = centre_indices(times, start_s, hop_s)
    return (centre >= 0) & (centre < n_mel_frames)


def gather_windows(mel: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Windows ``mel[:, s:s+length]`` (N, M, length) for each start ``s``, zero where out of range.

    ``mel`` is (M, T) with T possibly 0; ``starts`` may be negative or past the end.
    """
    if mel.ndim != 2:
        raise ValueError(f"mel must be (n_mels, frames), got shape {mel.shape}")
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    n_mels, n_time = mel.shape
    starts = np.asarray(starts, dtype=np.int64)
    index = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]     # (N, length)
    inside = (index >= 0) & (index < n_time)
    if n_time == 0:
        return np.zeros((len(starts), n_mels, length), dtype=mel.dtype)
    out = mel[:, np.clip(index, 0, n_time - 1)]                              # (M, N, length)
    out = np.where(inside[None], out, np.zeros((), dtype=mel.dtype))
    return np.ascontiguousarray(out.transpose(1, 0, 2))
