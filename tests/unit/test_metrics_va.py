"""CCC and the ABAW VA score: against an independent formula, population moments, and the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import ccc, va_metrics


def _reference_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """The ABAW organisers' form: Pearson's r (np.corrcoef) times the population standard deviations."""
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = np.std(x), np.std(y)
    return float(2 * r * sx * sy / (sx**2 + sy**2 + (np.mean(x) - np.mean(y)) ** 2))


def test_ccc_equals_an_independent_implementation_on_random_signals() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 500):
        y = rng.uniform(-1, 1, n)
        x = 0.6 * y + rng.normal(0.1, 0.3, n)
        assert ccc(y, x) == pytest.approx(_reference_ccc(x, y), rel=1e-12, abs=1e-12)
        # the same through np.cov with population normalisation
        cov = np.cov(x, y, bias=True)
        expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)
        assert ccc(y, x) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_ccc_uses_population_moments() -> None:
    # population moments give 6/7; sample (1/(N-1)) moments would give 27/31
    assert ccc([0.1, 0.2, 0.4], [0.1, 0.2, 0.3]) == pytest.approx(6 / 7)


def test_ccc_penalises_bias_and_scale_unlike_pearson() -> None:
    y = np.linspace(-0.5, 0.5, 50)
    assert ccc(y, y) == 1.0
    assert ccc(y, -y) == pytest.approx(-1.0)
    assert 0 < ccc(y, y + 0.3) < 1 and 0 < ccc(y, 2 * y) < 1


def test_unlabelled_frames_are_left_out() -> None:
    y = np.array([0.1, np.nan, 0.4, -0.3, np.nan, 0.8])
    x = np.array([0.0, 5.0, 0.5, -0.1, -7.0, 0.6])
    keep = ~np.isnan(y)
    assert ccc(y, x) == pytest.approx(_reference_ccc(x[keep], y[keep]))


def test_constant_predictions_score_zero() -> None:
    assert ccc([0.1, 0.5, -0.2], [0.3, 0.3, 0.3]) == 0.0


def test_constant_labels_score_zero() -> None:
    assert ccc([0.2, 0.2, 0.2], [0.1, 0.5, -0.2]) == 0.0


def test_both_constant() -> None:
    assert ccc([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]) == 1.0     # every prediction equals its label
    assert ccc([0.2, 0.2, 0.2], [0.4, 0.4, 0.4]) == 0.0


def test_one_frame() -> None:
    assert ccc([0.3], [0.3]) == 1.0
    assert ccc([0.3], [-0.1]) == 0.0
    assert ccc([np.nan, 0.3], [0.9, 0.3]) == 1.0


def test_no_labelled_frame_is_nan_with_zero_frames() -> None:
    assert math.isnan(ccc([np.nan, np.nan], [0.1, 0.2]))
    assert math.isnan(ccc([], []))
    out = va_metrics(np.full((3, 2), np.nan), np.zeros((3, 2)))
    assert math.isnan(out["ccc_valence"]) and math.isnan(out["score"])
    assert out["frames_valence"] == out["frames_arousal"] == 0


def test_va_score_is_the_mean_of_the_two_cccs() -> None:
    rng = np.random.default_rng(1)
    y = rng.uniform(-1, 1, (40, 2))
    y[5:9] = np.nan
    x = y + rng.normal(0, 0.4, (40, 2))
    x[5:9] = 0.0
    out = va_metrics(y, x)
    assert out["ccc_valence"] == pytest.approx(ccc(y[:, 0], x[:, 0]))
    assert out["ccc_arousal"] == pytest.approx(ccc(y[:, 1], x[:, 1]))
    assert out["score"] == pytest.approx(0.5 * (out["ccc_valence"] + out["ccc_arousal"]))
    assert out["frames_valence"] == out["frames_arousal"] == 36


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0.1, 0.2], [0.1], r"both be \(N,\)"),
        ([0.1, -5.0], [0.1, 0.2], r"in \[-1, 1\] or NaN \(unlabelled\), found -5"),
        ([0.1, 0.2], [0.1, np.nan], "predictions must be finite"),
        ([0.1, 0.2], [0.1, np.inf], "predictions must be finite"),
    ],
)
def test_bad_input_is_refused(y_true: list[float], y_pred: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ccc(y_true, y_pred)


def test_va_arrays_must_be_n_by_2() -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        va_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
