"""Paired differences: their t interval and equivalence test against scipy's own paired and one-sample t tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.paired_stats import paired_stats, t_interval, tost_p

ARM = [0.61, 0.58, 0.66, 0.63, 0.60, 0.65, 0.59, 0.62]
REFERENCE = [0.60, 0.55, 0.62, 0.63, 0.57, 0.61, 0.58, 0.60]


def test_interval_and_mean_agree_with_scipys_paired_t_test() -> None:
    differences = np.subtract(ARM, REFERENCE)
    result = paired_stats(differences, margin=0.02)
    test = stats.ttest_rel(ARM, REFERENCE)
    assert result["n"] == 8
    assert result["mean"] == pytest.approx(float(np.mean(differences)))
    assert result["sd"] == pytest.approx(float(np.std(differences, ddof=1)))
    low, high = test.confidence_interval(0.95)
    assert result["ci95"] == pytest.approx([low, high])
    low90, high90 = test.confidence_interval(0.90)
    assert result["ci90"] == pytest.approx([low90, high90])


def test_interval_by_hand() -> None:
    # mean 0.02, sd 0.01, n 4: t(0.975, 3) = 3.182446305284263
    low, high = t_interval(0.02, 0.01, 4, 0.95)
    assert (low, high) == pytest.approx((0.02 - 3.182446305284263 * 0.01 / 2, 0.02 + 3.182446305284263 * 0.01 / 2))


@pytest.mark.parametrize("margin", [0.01, 0.02, 0.05])
def test_equivalence_p_is_the_larger_of_scipys_two_one_sided_tests(margin: float) -> None:
    differences = np.subtract(ARM, REFERENCE)
    above = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(differences, margin, alternative="less").pvalue
    assert paired_stats(differences, margin)["tost_p"] == pytest.approx(max(above, below))


@pytest.mark.parametrize(
    ("differences", "margin", "verdict"),
    [
        ([0.10, 0.12, 0.11, 0.09], 0.02, "difference"),      # the 95 % interval is all above 0
        ([-0.10, -0.12, -0.11, -0.09], 0.02, "difference"),  # ... or all below
        ([0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0], 0.02, "equivalent"),  # the 90 % interval inside ±0.02
        ([0.05, -0.04, 0.03, -0.05], 0.02, "inconclusive"),  # contains 0 and spills past the margin
    ],
)
def test_verdicts(differences: list[float], margin: float, verdict: str) -> None:
    result = paired_stats(differences, margin)
    assert result["verdict"] == verdict
    equivalent = -margin < result["ci90"][0] and result["ci90"][1] < margin
    assert (result["tost_p"] < 0.05) == equivalent   # TOST at 5 % holds exactly when the 90 % interval is inside


def test_one_pair_has_no_deviation_interval_or_test() -> None:
    assert paired_stats([0.03]) == {"n": 1, "mean": 0.03, "sd": None, "ci95": None, "ci90": None, "tost_p": None,
                                    "verdict": "inconclusive"}


def test_identical_arms_are_equivalent_with_no_spread() -> None:
    result = paired_stats([0.0] * 8)
    assert result["sd"] == 0.0 and result["ci95"] == [0.0, 0.0] and result["ci90"] == [0.0, 0.0]
    assert result["tost_p"] == 0.0 and result["verdict"] == "equivalent"
    assert tost_p(0.03, 0.0, 8, 0.02) == 1.0   # a constant difference past the margin
    assert paired_stats([0.03] * 8)["verdict"] == "difference"


def test_results_are_plain_floats_for_json() -> None:
    result = paired_stats(np.array([0.01, 0.02, 0.04]))
    assert all(type(x) is float for x in [result["mean"], result["sd"], result["tost_p"], *result["ci95"],
                                          *result["ci90"]])
    assert not any(math.isnan(x) for x in result["ci95"])


@pytest.mark.parametrize(("differences", "margin", "message"), [
    ([], 0.02, "at least one paired difference"),
    ([0.1, 0.2], 0.0, "margin must be > 0, got 0.0"),
])
def test_bad_input_is_refused(differences: list[float], margin: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_stats(differences, margin)
