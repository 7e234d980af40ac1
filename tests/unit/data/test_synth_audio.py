"""The synthetic voice: deterministic, speech-like, and its prosody tells the expression apart."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.synth.audio import prosody_per_frame, sample_voice, synthesize
from pipeline.data.synth.config import AudioConfig
from pipeline.labels import EXPR_NAMES, NUM_EXPRS

SR, FPS = 16000, 25.0


def _speech(voice_seed: int, expr: int, seconds: float = 3.0, cfg: AudioConfig = AudioConfig()) -> np.ndarray:
    n = int(seconds * FPS)
    voice = sample_voice(np.random.default_rng(100 + voice_seed))
    track = (voice, np.full(n, expr, dtype=np.int8), np.ones(n, dtype=np.float32))
    return synthesize(np.random.default_rng([voice_seed, expr]), [track], FPS, SR, cfg)


def _features(wave: np.ndarray) -> np.ndarray:
    """Per 1-s window: log energy, zero-crossing rate, envelope modulation (a crude prosody vector)."""
    rows = []
    for start in range(0, len(wave) - SR + 1, SR):
        x = wave[start:start + SR]
        env = np.sqrt(np.convolve(x ** 2, np.ones(160) / 160, "same"))[::160]
        rows.append([np.log(np.sqrt(np.mean(x ** 2)) + 1e-6), np.mean(x[1:] * x[:-1] < 0) * 10,
                     np.log(env.std() / (env.mean() + 1e-6) + 1e-6)])
    return np.array(rows)


def test_length_range_and_determinism() -> None:
    a, b = _speech(0, 0, 2.0), _speech(0, 0, 2.0)
    assert a.shape == (2 * SR,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a).max() < 1.0 and np.sqrt(np.mean(a ** 2)) > 0.01
    silent = np.abs(a) < 0.005
    assert 0.02 < silent.mean() < 0.7      # pauses between phrases and syllables


def test_prosody_blends_with_expression_intensity() -> None:
    expr = np.array([0, 1, 1, 5], dtype=np.int8)
    level = np.array([1.0, 0.0, 1.0, 1.0], dtype=np.float32)
    p = prosody_per_frame(expr, level, strength=1.0)
    assert np.array_equal(p[0], p[1])               # Anger at zero intensity sounds neutral
    assert p[2, 3] > p[0, 3] > p[3, 3]              # energy: Anger > Neutral > Sadness
    assert np.allclose(prosody_per_frame(expr, level, strength=0.0), p[0])


@pytest.mark.slow
def test_audio_alone_predicts_expression_above_chance() -> None:
    feats, labels, voices = [], [], []
    for v in range(4):
        for e in range(NUM_EXPRS):
            f = _features(_speech(v, e))
            feats.append(f)
            labels += [e] * len(f)
            voices += [v] * len(f)
    x, y, g = np.concatenate(feats), np.array(labels), np.array(voices)
    correct = 0
    for held_out in range(4):        # nearest class centroid, leave one voice out
        train, test = g != held_out, g == held_out
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        z = (x - mu) / sd
        centroids = np.stack([z[train & (y == e)].mean(0) for e in range(NUM_EXPRS)])
        pred = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        correct += int((pred == y[test]).sum())
    accuracy = correct / len(y)
    assert accuracy > 2.0 / NUM_EXPRS, f"audio-only accuracy {accuracy:.2f} is near chance"
    anger, sadness = EXPR_NAMES.index("Anger"), EXPR_NAMES.index("Sadness")
    assert x[y == anger, 0].mean() > x[y == sadness, 0].mean() + 0.5     # anger is louder


def test_no_prosody_strength_removes_the_cue() -> None:
    cfg = AudioConfig(prosody_strength=0.0)
    loud = [_features(_speech(0, e, 2.0, cfg))[:, 0].mean() for e in (1, 5)]
    assert abs(loud[0] - loud[1]) < 0.5
