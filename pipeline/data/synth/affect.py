"""Continuous valence and arousal of one subject, per frame, as an annotator's joystick would give them.

Four parts, summed and clipped to [-1, 1]:

- the circumplex place of the expression being shown, blended from Neutral's by the episode's
  intensity (``CIRCUMPLEX``; the blend weight is the voice's, ``clip(level / 0.75, 0, 1)``);
- for arousal only, the voice: how loud and how high the subject's own syllables are against the
  speaker's neutral voice (:func:`vocal_activity`), heard over ``VOICE_S`` and held through pauses
  and the other speaker's turns, scaled by ``labels.va_voice_gain``;
- a slow drift of mood (an Ornstein-Uhlenbeck process, ``labels.va_drift_std``/``va_drift_s``);
- annotator jitter (a fast Ornstein-Uhlenbeck process, ``labels.va_noise_std``, ``JITTER_S``).

Then ``labels.unlabelled_rate`` of the frames become unlabelled (NaN here, -5 in the file) in
stretches, as the AU and EXPR files get them. All of it is drawn from the ``rng`` handed in, a
stream of its own, so VA leaves every other file of the dataset as it was.

    >>> n = 50
    >>> expr = np.zeros(n, dtype=np.int8); expr[10:40] = EXPR_NAMES.index("Happiness")
    >>> level = np.zeros(n, dtype=np.float32); level[10:40] = 1.0
    >>> va = make_affect(np.random.default_rng(0), expr, level, np.full(n, np.nan), 25.0, LabelConfig())
    >>> va.shape, va.dtype, bool(np.nanmean(va[15:35, 0]) > 0.4)
    ((50, 2), dtype('float32'), True)
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.data.synth.audio import CONTROL_HZ, Voice, VoiceTracks
from pipeline.data.synth.config import LabelConfig
from pipeline.data.synth.segments import unlabelled_stretches
from pipeline.labels import EXPR_NAMES, NUM_VA

# Angle (degrees, valence axis 0, arousal axis 90) of each class in the circumplex. Five are the
# angles of Russell's (1980) emotion words nearest the class: delighted 24.9, astonished 69.8,
# angry 99.0, afraid 116.0, sad 207.5. Disgust has no word there: 150 (negative, mildly aroused,
# between distressed and miserable) is our choice. Neutral sits at the centre.
CIRCUMPLEX_DEG: dict[str, float] = {
    "Anger": 99.0, "Disgust": 150.0, "Fear": 116.0, "Happiness": 24.9, "Sadness": 207.5, "Surprise": 69.8,
}
RADIUS = 0.7   # distance from the centre of a full-intensity expression: room for drift and voice before the clip
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    **{name: (RADIUS * math.cos(math.radians(deg)), RADIUS * math.sin(math.radians(deg)))
       for name, deg in CIRCUMPLEX_DEG.items()},
}
_TABLE = np.array([CIRCUMPLEX[name] for name in EXPR_NAMES], dtype=np.float64)   # (7, 2)

VOICE_S = 0.5     # time over which a listener hears the voice's activity
JITTER_S = 0.3    # time constant of the annotator's joystick jitter
# Mean of ln(sin(pi u) ** 0.7) over a syllable (u uniform in [0, 1]): -0.7 ln 2. Adding it back
# makes a neutral voice's activity about 0.
_SYLLABLE_LOG_MEAN = -0.7 * math.log(2.0)


def episode_classes(expr: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(N,) the class of the episode each frame belongs to, ramps included; 0 (Neutral) outside episodes.

    ``expr`` names the class only where the episode passes the label threshold; each run of
    ``level > 0`` takes the class shown most in it, so the target does not jump at the threshold.
    """
    out = np.zeros(len(expr), dtype=np.int64)
    inside = np.concatenate([[False], level > 0, [False]])
    edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
    for start, stop in zip(edges[::2], edges[1::2]):
        shown = expr[start:stop].astype(np.int64)
        shown = shown[shown > 0]
        if len(shown):
            out[start:stop] = np.bincount(shown).argmax()
    return out


def circumplex_target(expr: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(N, 2) valence and arousal of the shown expressions, blended from Neutral's by the episode intensity."""
    weight = np.clip(np.asarray(level, dtype=np.float64) / 0.75, 0.0, 1.0)[:, None]
    return _TABLE[0][None, :] * (1 - weight) + _TABLE[episode_classes(expr, level)] * weight


def vocal_activity(tracks: VoiceTracks, voice: Voice, speaker: int, n_frames: int, fps: float) -> np.ndarray:
    """(N,) how loud and high the speaker's voice is per frame against its neutral voice; NaN where it is silent.

    Per control step of this speaker's voiced syllables, ``ln(env / level) + 0.7 ln 2 + ln(f0 / f0_voice)``
    (loudness over the recording level, the syllable shape's mean put back, pitch over the speaker's
    base); the frame's value is their mean. A neutral voice gives about 0, Anger about +0.8, Sadness
    about -1 (from ``PROSODY``'s energy and pitch factors; docs/synthetic.md has the measured values).
    """
    voiced = (tracks.env > 0) & (tracks.speaker == speaker)
    steps = np.flatnonzero(voiced)
    frames = (steps / CONTROL_HZ * fps).astype(np.int64)
    keep = frames < n_frames
    steps, frames = steps[keep], frames[keep]
    value = (np.log(tracks.env[steps] / voice.level) - _SYLLABLE_LOG_MEAN + np.log(tracks.f0[steps] / voice.f0))
    total = np.bincount(frames, weights=value, minlength=n_frames)
    count = np.bincount(frames, minlength=n_frames)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def heard_activity(activity: np.ndarray, fps: float) -> np.ndarray:
    """(N,) the voice's activity as a listener follows it: a leaky average over ``VOICE_S``, held where NaN (silent)."""
    alpha = 1.0 - math.exp(-1.0 / (fps * VOICE_S))
    out = np.zeros(len(activity))
    heard = 0.0
    for i, value in enumerate(activity):
        if not math.isnan(value):
            heard += alpha * (value - heard)
        out[i] = heard
    return out


def ornstein_uhlenbeck(rng: np.random.Generator, n: int, std: float, tau_s: float, fps: float) -> np.ndarray:
    """(n,) a stationary Ornstein-Uhlenbeck process per frame: standard deviation ``std``, time constant ``tau_s``.

    Exact discretisation: ``x[t] = a x[t-1] + std sqrt(1 - a^2) e[t]`` with ``a = exp(-1 / (fps tau_s))``,
    ``x[0] ~ N(0, std^2)``.
    """
    a = math.exp(-1.0 / (fps * tau_s))
    shocks = rng.standard_normal(n)
    out = np.empty(n)
    x = std * shocks[0] if n else 0.0
    scale = std * math.sqrt(1.0 - a * a)
    for i in range(n):
        if i:
            x = a * x + scale * shocks[i]
        out[i] = x
    return out


def make_affect(rng: np.random.Generator, expr: np.ndarray, level: np.ndarray, activity: np.ndarray,
                fps: float, cfg: LabelConfig) -> np.ndarray:
    """(N, 2) float32 valence and arousal in [-1, 1], NaN = unlabelled, from ``expr``/``level`` and ``activity`` (N,).

    Drift, jitter and the unlabelled stretches each draw from their own child of ``rng``, so
    changing one setting leaves the others' draws as they were.
    """
    n = len(expr)
    drift_rng, jitter_rng, gap_rng = rng.spawn(3)
    va = circumplex_target(expr, level)
    va[:, 1] += cfg.va_voice_gain * np.tanh(heard_activity(activity, fps))
    for k in range(NUM_VA):
        va[:, k] += ornstein_uhlenbeck(drift_rng, n, cfg.va_drift_std, cfg.va_drift_s, fps)
        va[:, k] += ornstein_uhlenbeck(jitter_rng, n, cfg.va_noise_std, JITTER_S, fps)
    va = np.clip(va, -1.0, 1.0).astype(np.float32)
    va[unlabelled_stretches(gap_rng, n, cfg.unlabelled_rate, fps)] = np.nan
    return va
