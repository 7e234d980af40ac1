"""Whole-video inference of the sequence model: its input vector and overlapping-window averaging.

``compose_features`` is the one place the sequence model's per-frame input is defined
(concatenation fusion). For each selected modality, in the order visual then audio, the frame's
512-d embedding is followed by that modality's presence flag (1.0 present, 0.0 missing)::

    modalities="visual":  [visual (E) | face_present (1)]                               D = E + 1
    modalities="audio":   [audio (E) | audio_present (1)]                               D = E + 1
    modalities="both":    [visual (E) | face_present (1) | audio (E) | audio_present (1)] D = 2E + 2

The flags let the model tell "no face / no audio" apart from an embedding that happens to be small;
embeddings of missing frames are forced to zero, whatever the store holds.

``sliding_window_logits`` runs any ``run_fn`` (torch module or onnxruntime session, see
:func:`torch_run_fn` and :func:`onnx_run_fn`) over windows of ``window`` frames started every
``stride`` frames, with one extra window ending on the last frame, and averages the per-frame
logits of all windows covering each frame. A video shorter than ``window`` is run as one window of
its own length, which is what a window padded to full length with a key padding mask computes
(attention ignores padded keys and the positional code of frame ``t`` does not depend on the
padding), so no padded frame can influence a real one.

Example:
    >>> import numpy as np
    >>> visual, audio = np.ones((50, 512), np.float16), np.zeros((50, 512), np.float16)
    >>> present = np.ones(50, bool)
    >>> feats = compose_features(visual, audio, present, ~present, "both")
    >>> feats.shape, feats.dtype
    ((50, 1026), dtype('float32'))
    >>> run = lambda x: (np.zeros(x.shape[:2] + (12,), np.float32), np.zeros(x.shape[:2] + (7,), np.float32))
    >>> au, expr = sliding_window_logits(run, feats, window=30, stride=10)
    >>> au.shape, expr.shape
    ((50, 12), (50, 7))
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np

from pipeline.labels import NUM_AUS, NUM_EXPRS

Modalities = Literal["visual", "audio", "both"]
MODALITIES: tuple[str, ...] = ("visual", "audio", "both")
EMBEDDING_DIM = 512

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# the presence flag that follows each modality's embedding in the feature vector
PRESENCE_FLAGS: dict[str, str] = {"visual": "face_present", "audio": "audio_present"}


def selected_modalities(modalities: str) -> tuple[str, ...]:
    """The modalities whose blocks make up the feature vector, in layout order (visual first)."""
    if modalities not in MODALITIES:
        raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}")
    return ("visual", "audio") if modalities == "both" else (modalities,)


def feature_layout(modalities: str, embedding_dim: int = EMBEDDING_DIM) -> list[dict[str, Any]]:
    """The blocks of the composed feature vector: ``[{"name", "start", "stop"}, ...]`` in order."""
    layout, start = [], 0
    for modality in selected_modalities(modalities):
        layout.append({"name": modality, "start": start, "stop": start + embedding_dim})
        layout.append({"name": PRESENCE_FLAGS[modality], "start": start + embedding_dim,
                       "stop": start + embedding_dim + 1})
        start += embedding_dim + 1
    return layout


def feature_dim(modalities: str, embedding_dim: int = EMBEDDING_DIM) -> int:
    """Width D of the composed feature vector for ``modalities``."""
    return feature_layout(modalities, embedding_dim)[-1]["stop"]


def write_modality(
    out: np.ndarray, modalities: str, modality: str, embedding: np.ndarray | None, present: np.ndarray | None
) -> None:
    """Write ``modality``'s embedding (..., E) and presence flag (...,) into its columns of ``out`` (..., D).

    Frames whose flag is false get a zero embedding, whatever the store holds.
    """
    flag = PRESENCE_FLAGS[modality]
    if embedding is None or present is None:
        raise ValueError(f"modality {modality!r} is selected but its {modality} embedding or {flag} is None")
    blocks = {block["name"]: block for block in feature_layout(modalities, np.shape(embedding)[-1])}
    if modality not in blocks or out.shape[-1] != max(b["stop"] for b in blocks.values()):
        raise ValueError(f"{out.shape[-1]} feature columns do not hold modality {modality!r} of layout {modalities!r}")
    embedding, present = np.asarray(embedding), np.asarray(present, dtype=bool)
    if embedding.shape[:-1] != out.shape[:-1] or present.shape != out.shape[:-1]:
        raise ValueError(
            f"{modality} embedding shape {embedding.shape} and {flag} shape {present.shape} do not match "
            f"the frames {out.shape[:-1]}"
        )
    start, stop = blocks[modality]["start"], blocks[modality]["stop"]
    out[..., start:stop] = embedding          # casts (float16 -> float32) while copying
    if not present.all():
        out[..., start:stop][~present] = 0
    out[..., blocks[flag]["start"]] = present


def compose_features(
    visual: np.ndarray | None,
    audio: np.ndarray | None,
    face_present: np.ndarray | None,
    audio_present: np.ndarray | None,
    modalities: Modalities,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Concatenate the selected modalities' embeddings and presence flags: (..., D) of ``dtype``.

    ``visual``/``audio`` are (..., E) (any float dtype, float16 from the stores), the flags (...,)
    bool. The leading shape is free, so a (N, E) video or a (B, L, E) batch of windows both work.
    Inputs of an unselected modality may be ``None``. ``dtype=np.float16`` keeps a batch at the
    stores' precision (the training loader converts it on the device).
    """
    inputs = {"visual": (visual, face_present), "audio": (audio, audio_present)}
    selected = selected_modalities(modalities)
    first = inputs[selected[0]][0]
    if first is None:
        raise ValueError(f"modality {selected[0]!r} is selected but its {selected[0]} embedding is None")
    width = feature_dim(modalities, np.shape(first)[-1])
    out = np.empty(np.shape(first)[:-1] + (width,), dtype=dtype)
    for modality in selected:
        write_modality(out, modalities, modality, *inputs[modality])
    return out


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
