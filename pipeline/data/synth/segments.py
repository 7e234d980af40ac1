"""Temporal behaviour of one subject: expression episodes, spontaneous AUs, labels, degradations.

Everything is per video frame. The drawn AU intensities come from expression episodes (prototype
AUs with onset/apex/offset ramps) and from AU events outside expressions; the labels are derived
from what is drawn (an AU is present when its drawn intensity passes a threshold), then given a
little annotator noise and some unlabelled (-1) stretches.

    >>> from pipeline.data.synth.expressions import sample_style
    >>> rng = np.random.default_rng(0)
    >>> tl = make_timeline(rng, 100, 25.0, LabelConfig(), sample_style(rng, (0.8, 1.0)))
    >>> tl.intensity.shape, tl.au_labels.shape, tl.expr_labels.shape
    ((100, 15), (100, 12), (100,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.synth.config import DegradeConfig, LabelConfig
from pipeline.data.synth.expressions import AU_INDEX, NUM_DRAWN, SPONTANEOUS, Style, labelled, prototype_intensity
from pipeline.labels import NUM_AUS, NUM_EXPRS, UNLABELLED

# Degradation codes per frame (Degradations.kind).
CLEAR, OCCLUDED, BLURRED, MISSING = 0, 1, 2, 3
# Occluder shapes (Degradations.variant when kind is OCCLUDED or MISSING).
HAND_MOUTH, HAND_EYES, OBJECT_LOWER = 0, 1, 2
COVERED, OUT_OF_FRAME = 0, 1


@dataclass(frozen=True)
class Timeline:
    """One subject's per-frame behaviour and its annotation."""

    intensity: np.ndarray    # (N, NUM_DRAWN) float32 drawn AU intensity in [0, 1]
    expr: np.ndarray         # (N,) int8 expression actually shown (0 = Neutral)
    expr_level: np.ndarray   # (N,) float32 intensity of the current expression episode
    au_labels: np.ndarray    # (N, 12) int8 annotation (0/1/-1)
    expr_labels: np.ndarray  # (N,) int8 annotation (0..6/-1)


@dataclass(frozen=True)
class Degradations:
    """Per-frame face degradations of one subject."""

    kind: np.ndarray      # (N,) int8: CLEAR, OCCLUDED, BLURRED or MISSING
    variant: np.ndarray   # (N,) int8: occluder shape or missing reason


def envelope(n: int, start: int, stop: int, ramp_on: int, ramp_off: int, peak: float) -> np.ndarray:
    """Trapezoid with smooth (raised-cosine) onset and offset ramps, zero outside [start, stop)."""
    env = np.zeros(n, dtype=np.float32)
    length = stop - start
    if length <= 0:
        return env
    t = np.arange(length, dtype=np.float32)
    on = np.clip((t + 1) / max(ramp_on, 1), 0, 1)
    off = np.clip((length - t) / max(ramp_off, 1), 0, 1)
    shape = 0.5 - 0.5 * np.cos(np.pi * np.minimum(on, off))
    lo, hi = max(start, 0), min(stop, n)
    if hi <= lo:
        return env
    env[lo:hi] = peak * shape[lo - start:hi - start]
    return env


def make_timeline(rng: np.random.Generator, n: int, fps: float, cfg: LabelConfig, style: Style) -> Timeline:
    """Draw expression episodes and spontaneous AUs for ``n`` frames and annotate them.

    Behaviour and annotation noise use separate random streams, so changing the label-noise settings
    leaves what is drawn unchanged.
    """
    rng, noise_rng = rng.spawn(2)
    intensity = np.zeros((n, NUM_DRAWN), dtype=np.float32)
    expr = np.zeros(n, dtype=np.int8)
    expr_level = np.zeros(n, dtype=np.float32)
    shown_label = np.zeros(n, dtype=np.int8)   # expression class an annotator would write (before noise)

    t = int(rng.uniform(*cfg.neutral_gap_s) * fps * 0.5)
    while t < n:
        length = max(int(rng.uniform(*cfg.expr_segment_s) * fps), 4)
        cls = int(rng.integers(1, NUM_EXPRS))
        env = envelope(n, t, t + length, _frames(rng, cfg.ramp_s, fps), _frames(rng, cfg.ramp_s, fps),
                       float(rng.uniform(0.75, 1.0)))
        np.maximum(intensity, env[:, None] * prototype_intensity(cls, style)[None, :], out=intensity)
        active = env >= cfg.expr_threshold
        expr[active] = cls
        expr_level = np.maximum(expr_level, env)
        label_cls = cls
        if noise_rng.random() < cfg.expr_swap_rate:
            label_cls = int(noise_rng.choice([c for c in range(1, NUM_EXPRS) if c != cls]))
        shown_label[_jitter_mask(noise_rng, active, cfg.boundary_jitter_frames)] = label_cls
        t += length + max(int(rng.uniform(*cfg.neutral_gap_s) * fps), 1)

    groups = list(SPONTANEOUS)
    weights = np.array([SPONTANEOUS[g] for g in groups])
    n_events = rng.poisson(cfg.spontaneous_au_per_min * n / fps / 60.0)
    for _ in range(n_events):
        group = groups[rng.choice(len(groups), p=weights / weights.sum())]
        start = int(rng.integers(-int(fps), n))
        length = max(int(rng.uniform(0.4, 2.0) * fps), 3)
        env = envelope(n, start, start + length, _frames(rng, cfg.ramp_s, fps), _frames(rng, cfg.ramp_s, fps),
                       float(rng.uniform(0.55, 1.0)))
        for au in group:
            k = AU_INDEX[au]
            np.maximum(intensity[:, k], env * min(style.gain[k], 1.0), out=intensity[:, k])

    au_true = labelled(intensity) >= cfg.au_threshold
    au_labels = np.zeros((n, NUM_AUS), dtype=np.int8)
    for k in range(NUM_AUS):
        au_labels[:, k] = _jitter_mask(noise_rng, au_true[:, k], cfg.boundary_jitter_frames)
    _flip_runs(noise_rng, au_labels, cfg.au_flip_rate)
    expr_labels = shown_label.copy()
    _unlabel_runs(noise_rng, au_labels, cfg.unlabelled_rate, fps)
    _unlabel_runs(noise_rng, expr_labels, cfg.unlabelled_rate, fps)
    return Timeline(intensity=intensity, expr=expr, expr_level=expr_level,
                    au_labels=au_labels, expr_labels=expr_labels)


def make_degradations(rng: np.random.Generator, n: int, fps: float, cfg: DegradeConfig,
                      allow_out_of_frame: bool = True) -> Degradations:
    """Place occlusion, blur and missing-face events covering about the configured shares of frames."""
    kind = np.zeros(n, dtype=np.int8)
    variant = np.zeros(n, dtype=np.int8)
    for code, rate in ((MISSING, cfg.missing_rate), (OCCLUDED, cfg.occlusion_rate), (BLURRED, cfg.blur_rate)):
        target = int(round(rate * n))
        if rate > 0:
            target = max(target, 1)
        covered = 0
        for _ in range(1000):
            if covered >= target:
                break
            length = min(max(int(rng.uniform(*cfg.event_s) * fps), 1), target - covered)
            start = int(rng.integers(0, max(n - length, 1)))
            free = kind[start:start + length] == CLEAR
            if not free.any():
                continue
            if code == MISSING:
                choice = int(rng.integers(0, 2)) if allow_out_of_frame else COVERED
            elif code == OCCLUDED:
                choice = int(rng.integers(0, 3))
            else:
                choice = 0
            idx = start + np.flatnonzero(free)
            kind[idx] = code
            variant[idx] = choice
            covered += len(idx)
    return Degradations(kind=kind, variant=variant)


def _frames(rng: np.random.Generator, range_s: tuple[float, float], fps: float) -> int:
    return max(int(rng.uniform(*range_s) * fps), 1)


def _jitter_mask(rng: np.random.Generator, mask: np.ndarray, jitter: int) -> np.ndarray:
    """Shift each run of True in ``mask`` by independent onset/offset errors of up to ``jitter`` frames."""
    out = np.zeros_like(mask, dtype=bool)
    n = len(mask)
    for start, stop in _runs(mask):
        if jitter > 0:
            start += int(rng.integers(-jitter, jitter + 1))
            stop += int(rng.integers(-jitter, jitter + 1))
        if stop - start < 1:
            stop = start + 1
        out[max(start, 0):min(stop, n)] = True
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _flip_runs(rng: np.random.Generator, labels: np.ndarray, rate: float) -> None:
    """Flip about ``rate`` of the cells of a (N, 12) 0/1 array in short runs (annotator slips)."""
    n = labels.shape[0]
    budget = int(rate * labels.size)
    while budget > 0:
        length = min(int(rng.integers(2, 9)), budget, n)
        start = int(rng.integers(0, n - length + 1))
        col = int(rng.integers(0, labels.shape[1]))
        labels[start:start + length, col] = 1 - labels[start:start + length, col]
        budget -= length


def unlabelled_stretches(rng: np.random.Generator, n: int, rate: float, fps: float) -> np.ndarray:
    """(n,) bool: about ``rate`` of the frames in stretches of 0.3-1.5 s, as the AU and EXPR files get them."""
    marks = np.zeros(n, dtype=np.int8)
    _unlabel_runs(rng, marks, rate, fps)
    return marks == UNLABELLED


def _unlabel_runs(rng: np.random.Generator, labels: np.ndarray, rate: float, fps: float) -> None:
    """Set about ``rate`` of the frames (whole rows) to -1 in stretches of 0.3-1.5 s; at least one."""
    if rate <= 0:
        return
    n = labels.shape[0]
    target = max(int(rate * n), 1)
    done = 0
    while done < target:
        length = min(max(int(rng.uniform(0.3, 1.5) * fps), 1), target - done, n)
        start = int(rng.integers(0, n - length + 1))
        labels[start:start + length] = UNLABELLED
        done += length
