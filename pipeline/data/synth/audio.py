"""Speech-like audio whose prosody follows the speaker's current expression.

The voice is a harmonic (glottal-like) source shaped by vowel formants, cut into syllables and
phrases with pauses. Per expression the pitch level, pitch movement (accents, phrase contour,
tremor), loudness, speaking rate, spectral tilt and breathiness differ (``PROSODY``), blended in
with the intensity of the expression episode, so audio alone predicts expression above chance.

    >>> rng = np.random.default_rng(0)
    >>> expr = np.zeros(50, dtype=np.int8); level = np.zeros(50, dtype=np.float32)
    >>> wave = synthesize(rng, [(sample_voice(rng), expr, level)], 25.0, 16000, AudioConfig())
    >>> wave.shape, wave.dtype
    ((32000,), dtype('float32'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.data.synth.config import AudioConfig
from pipeline.labels import EXPR_NAMES

CONTROL_HZ = 100          # prosody control rate
MAX_HARMONIC_HZ = 4000.0

# pitch factor, accent range (semitones), syllables/s, energy, tilt change, breathiness,
# tremor depth, phrase contour (semitones from start to end of a phrase)
PROSODY_KEYS = ("pitch", "accent", "rate", "energy", "tilt", "breath", "tremor", "contour")
PROSODY: dict[str, tuple[float, ...]] = {
    "Neutral":   (1.00, 1.5, 4.0, 1.0, 0.00, 0.05, 0.0, -2.0),
    "Anger":     (1.18, 3.5, 5.5, 2.0, 0.40, 0.02, 0.0, -4.0),
    "Disgust":   (0.90, 1.2, 2.8, 0.8, -0.15, 0.15, 0.3, -3.0),
    "Fear":      (1.35, 2.5, 6.0, 0.9, 0.10, 0.22, 1.0, 1.0),
    "Happiness": (1.25, 6.0, 4.8, 1.4, 0.20, 0.05, 0.0, 2.0),
    "Sadness":   (0.85, 0.6, 2.5, 0.45, -0.40, 0.30, 0.0, -3.0),
    "Surprise":  (1.40, 5.0, 3.6, 1.3, 0.10, 0.10, 0.0, 7.0),
}
_TABLE = np.array([PROSODY[name] for name in EXPR_NAMES], dtype=np.float64)  # (7, 8)
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
                  dtype=np.float64)
FORMANT_BW = np.array([90.0, 110.0, 160.0])
FORMANT_GAIN = np.array([1.0, 0.55, 0.3])


@dataclass(frozen=True)
class Voice:
    """A speaker: baseline pitch, formant scaling, recording level."""

    f0: float
    formant_scale: float
    level: float


def sample_voice(rng: np.random.Generator) -> Voice:
    """Draw a low or high voice."""
    high = rng.random() < 0.5
    f0 = rng.uniform(180, 240) if high else rng.uniform(95, 140)
    return Voice(f0=float(f0), formant_scale=float(rng.uniform(1.08, 1.18) if high else rng.uniform(0.95, 1.03)),
                 level=float(rng.uniform(0.6, 1.4)))


def prosody_per_frame(expr: np.ndarray, level: np.ndarray, strength: float) -> np.ndarray:
    """(N, 8) prosody parameters: neutral blended towards the shown expression by its intensity."""
    weight = strength * np.clip(level / 0.75, 0.0, 1.0)[:, None]
    return _TABLE[0][None, :] * (1 - weight) + _TABLE[expr.astype(int)] * weight


@dataclass(frozen=True)
class VoiceTracks:
    """The control-rate (``CONTROL_HZ``) tracks of a soundtrack, before rendering; all (C,) unless noted."""

    f0: np.ndarray          # pitch (Hz), held through pauses
    env: np.ndarray         # voiced loudness: voice level x expression energy x syllable shape; 0 = not voicing
    burst: np.ndarray       # consonant noise bursts
    breath: np.ndarray
    tilt: np.ndarray
    formants: np.ndarray    # (C, 3) formant frequencies (Hz)
    speaker: np.ndarray     # int8: index of the speaker whose syllable covers the step, -1 = none (a pause)
    duration_s: float       # the video's duration


def synthesize(rng: np.random.Generator, speakers: list[tuple[Voice, np.ndarray, np.ndarray]], fps: float,
               sample_rate: int, cfg: AudioConfig) -> np.ndarray:
    """Mono float32 audio for a video of N frames; ``speakers`` are (voice, expr (N,), level (N,)) tuples.

    With two speakers they take turns phrase by phrase; the prosody follows whoever is speaking.
    """
    return render_voice(rng, voice_tracks(rng, speakers, fps, cfg), sample_rate, cfg)


def render_voice(rng: np.random.Generator, tracks: VoiceTracks, sample_rate: int, cfg: AudioConfig) -> np.ndarray:
    """Render ``tracks`` at ``sample_rate``: the second half of :func:`synthesize`, drawing from the same ``rng``."""
    return _render(rng, tracks.f0, tracks.env, tracks.burst, tracks.breath, tracks.tilt, tracks.formants,
                   int(round(tracks.duration_s * sample_rate)), sample_rate, cfg.snr_db)


def voice_tracks(rng: np.random.Generator, speakers: list[tuple[Voice, np.ndarray, np.ndarray]], fps: float,
                 cfg: AudioConfig) -> VoiceTracks:
    """Phrases, syllables and their prosody for N frames: the first half of :func:`synthesize`."""
    n_frames = len(speakers[0][1])
    duration = n_frames / fps
    n_ctrl = int(math.ceil(duration * CONTROL_HZ)) + 2
    prosody = [prosody_per_frame(expr, level, cfg.prosody_strength) for _, expr, level in speakers]
    f0 = np.full(n_ctrl, speakers[0][0].f0)
    env = np.zeros(n_ctrl)
    burst = np.zeros(n_ctrl)
    breath = np.zeros(n_ctrl)
    tilt = np.zeros(n_ctrl)
    formants = np.tile(VOWELS[0], (n_ctrl, 1))
    who = np.full(n_ctrl, -1, dtype=np.int8)

    speaker = int(rng.integers(len(speakers)))
    c = int(rng.uniform(0.0, 0.5) * CONTROL_HZ)
    while c < n_ctrl - 1:
        voice = speakers[speaker][0]
        n_syl = int(rng.integers(3, 9))
        start = c
        p = _at(prosody[speaker], c, fps)
        phrase_len = n_syl / p[2]
        for s in range(n_syl):
            if c >= n_ctrl - 1:
                break
            p = _at(prosody[speaker], c, fps)
            length = max(int(CONTROL_HZ / p[2] * rng.uniform(0.75, 1.25)), 4)
            cons = max(int(length * rng.uniform(0.15, 0.3)), 1)
            stop = min(c + length, n_ctrl)
            seg = np.arange(stop - c - cons)
            shape = np.sin(np.pi * (seg + 0.5) / max(len(seg), 1)) ** 0.7
            progress = (c - start) / CONTROL_HZ / max(phrase_len, 0.1)
            accent = p[1] * (1.0 if rng.random() < 0.35 else rng.uniform(-0.3, 0.3))
            semis = accent * np.sin(np.pi * (seg + 0.5) / max(len(seg), 1)) + p[7] * (progress - 0.5)
            t = (c + cons + seg) / CONTROL_HZ
            tremor = 1 + 0.04 * p[6] * np.sin(2 * math.pi * 6.5 * t)
            f0[c + cons:stop] = voice.f0 * p[0] * 2 ** (semis / 12) * tremor
            env[c + cons:stop] = voice.level * p[3] * rng.uniform(0.8, 1.2) * shape
            burst[c:c + cons] = voice.level * p[3] * 0.25
            breath[c:stop] = p[5]
            tilt[c:stop] = p[4]
            formants[c:stop] = VOWELS[rng.integers(len(VOWELS))] * voice.formant_scale
            who[c:stop] = speaker
            f0[c:c + cons] = f0[c + cons] if c + cons < n_ctrl else voice.f0
            c = stop
        mean_phrase = 6 / 4.0
        pause = rng.exponential(mean_phrase * (1 - cfg.speech_fraction) / max(cfg.speech_fraction, 0.05)) + 0.08
        c += int(pause * CONTROL_HZ)
        if len(speakers) > 1 and rng.random() < 0.5:
            speaker = 1 - speaker
    f0[env == 0] = np.maximum.accumulate(np.where(env > 0, f0, 0))[env == 0].clip(min=speakers[0][0].f0)
    return VoiceTracks(f0=f0, env=env, burst=burst, breath=breath, tilt=tilt, formants=formants, speaker=who,
                       duration_s=duration)


def _at(prosody: np.ndarray, c: int, fps: float) -> np.ndarray:
    return prosody[min(int(c / CONTROL_HZ * fps), len(prosody) - 1)]


def _render(rng: np.random.Generator, f0: np.ndarray, env: np.ndarray, burst: np.ndarray, breath: np.ndarray,
            tilt: np.ndarray, formants: np.ndarray, n: int, sr: int, snr_db: float) -> np.ndarray:
    """Additive harmonic synthesis from control-rate tracks, plus breath, bursts and room noise."""
    t_ctrl = np.arange(len(f0)) / CONTROL_HZ
    t = np.arange(n) / sr
    f0_s = np.interp(t, t_ctrl, f0)
    phase = 2 * np.pi * np.cumsum(f0_s) / sr
    n_harm = int(min(MAX_HARMONIC_HZ, sr / 2 * 0.9) // max(f0.min(), 60.0))
    k = np.arange(1, n_harm + 1)
    freqs = f0[:, None] * k[None, :]                                         # (C, K)
    resonance = (FORMANT_GAIN / (1 + ((freqs[:, :, None] - formants[:, None, :]) / FORMANT_BW) ** 2)).sum(-1)
    amp = env[:, None] * k[None, :] ** (-(1.0 - tilt[:, None])) * (resonance + 0.02)
    amp[freqs > min(MAX_HARMONIC_HZ, sr / 2 * 0.9)] = 0
    out = np.zeros(n, dtype=np.float32)
    pos = t * CONTROL_HZ
    chunk = sr  # one second at a time keeps the (samples, harmonics) arrays small
    for s0 in range(0, n, chunk):
        sl = slice(s0, min(s0 + chunk, n))
        i0 = np.minimum(pos[sl].astype(int), len(f0) - 2)
        w = (pos[sl] - i0)[:, None]
        a = amp[i0] * (1 - w) + amp[i0 + 1] * w
        out[sl] = (a * np.sin(phase[sl, None] * k[None, :])).sum(1)
    env_s = np.interp(t, t_ctrl, env)
    noise = rng.standard_normal(n)
    hiss = np.diff(noise, prepend=0.0)   # high-passed noise for consonant bursts
    out += 0.5 * np.interp(t, t_ctrl, breath) * env_s * noise.astype(np.float32)
    out += np.interp(t, t_ctrl, burst) * hiss.astype(np.float32)
    speech_rms = float(np.sqrt(np.mean(out[env_s > 0] ** 2))) if (env_s > 0).any() else 0.1
    out += (speech_rms * 10 ** (-snr_db / 20)) * rng.standard_normal(n).astype(np.float32)
    return np.tanh(out * 0.35).astype(np.float32)
