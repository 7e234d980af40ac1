"""Temporal segments: labels follow what is drawn, noise and -1 stretches as configured, degradations."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.synth.config import DegradeConfig, LabelConfig
from pipeline.data.synth.expressions import sample_style
from pipeline.data.synth.segments import (
    BLURRED, CLEAR, MISSING, OCCLUDED, envelope, make_degradations, make_timeline,
)
from pipeline.labels import NUM_AUS, NUM_EXPRS, UNLABELLED

NOISELESS = dataclasses.replace(LabelConfig(), boundary_jitter_frames=0, au_flip_rate=0.0, expr_swap_rate=0.0,
                                unlabelled_rate=0.0)


def _timeline(cfg: LabelConfig, seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    return make_timeline(rng, n, 25.0, cfg, sample_style(rng, (0.65, 1.15)))


def test_noiseless_labels_are_exactly_the_drawn_aus_and_expressions() -> None:
    tl = _timeline(NOISELESS)
    assert np.array_equal(tl.au_labels, (tl.intensity[:, :NUM_AUS] >= NOISELESS.au_threshold).astype(np.int8))
    assert np.array_equal(tl.expr_labels, tl.expr)
    assert set(np.unique(tl.expr)) == set(range(NUM_EXPRS))       # every class occurs in 2 minutes


def test_aus_also_occur_outside_expressions() -> None:
    tl = _timeline(NOISELESS)
    neutral = tl.expr == 0
    assert tl.au_labels[neutral].sum() > 0


def test_default_noise_is_small_and_unlabelled_rows_are_whole() -> None:
    cfg = LabelConfig()
    clean, noisy = _timeline(NOISELESS, seed=3), _timeline(cfg, seed=3)
    au_rows = noisy.au_labels[:, 0] != UNLABELLED
    assert np.all((noisy.au_labels == UNLABELLED).all(1) == ~au_rows)          # -1 rows are all -1
    assert 0.02 < 1 - au_rows.mean() < 0.15
    agree_au = (noisy.au_labels[au_rows] == clean.au_labels[au_rows]).mean()
    assert 0.95 < agree_au < 1.0
    expr_rows = noisy.expr_labels != UNLABELLED
    assert 0.02 < 1 - expr_rows.mean() < 0.15
    assert 0.8 < (noisy.expr_labels[expr_rows] == clean.expr_labels[expr_rows]).mean() < 1.0


def test_same_seed_same_timeline() -> None:
    a, b = _timeline(LabelConfig(), seed=7, n=500), _timeline(LabelConfig(), seed=7, n=500)
    assert np.array_equal(a.au_labels, b.au_labels) and np.array_equal(a.intensity, b.intensity)


def test_envelope_has_onset_apex_offset() -> None:
    env = envelope(50, 10, 30, 5, 5, 0.8)
    assert env[:10].max() == 0 and env[30:].max() == 0
    assert np.isclose(env.max(), 0.8) and env[10] < env[15]
    assert envelope(10, -20, -5, 3, 3, 1.0).max() == 0        # entirely before the video


def test_degradations_cover_about_the_configured_shares() -> None:
    cfg = DegradeConfig(occlusion_rate=0.1, blur_rate=0.05, missing_rate=0.08)
    deg = make_degradations(np.random.default_rng(0), 5000, 25.0, cfg)
    share = {code: (deg.kind == code).mean() for code in (CLEAR, OCCLUDED, BLURRED, MISSING)}
    assert abs(share[OCCLUDED] - 0.1) < 0.02
    assert abs(share[BLURRED] - 0.05) < 0.02
    assert abs(share[MISSING] - 0.08) < 0.02
    none = make_degradations(np.random.default_rng(0), 100, 25.0, DegradeConfig(0.0, 0.0, 0.0))
    assert (none.kind == CLEAR).all()
