"""Paired differences of an ablation: their mean, a t interval, an equivalence test and a verdict.

A study declares one statistic before it runs (e.g. the mean face-frame score) and an equivalence
margin. Each replicate gives one paired difference ``arm - reference``; over ``n`` replicates the
mean difference gets a two-sided 95 % t interval, and the two one-sided tests (TOST) of
equivalence within ``±margin``, which hold at the 5 % level exactly when the 90 % t interval lies
inside ``(-margin, +margin)``. The verdict reads them in that order: ``difference`` when the 95 %
interval excludes 0, else ``equivalent`` when TOST holds, else ``inconclusive``. So "no benefit" is
never read off an interval that merely contains 0.

Example:
    >>> stats = paired_stats([0.01, 0.03, 0.02], margin=0.05)
    >>> stats["n"], round(stats["mean"], 3), round(stats["sd"], 3), stats["verdict"]
    (3, 0.02, 0.01, 'equivalent')
    >>> [round(x, 4) for x in stats["ci95"]], [round(x, 4) for x in stats["ci90"]]
    ([-0.0048, 0.0448], [0.0031, 0.0369])
    >>> paired_stats([0.01, 0.03, 0.02], margin=0.01)["verdict"]
    'inconclusive'
    >>> paired_stats([0.02], margin=0.05)["ci95"] is None
    True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from scipy import stats as scipy_stats

DEFAULT_MARGIN = 0.02
VERDICTS: tuple[str, ...] = ("difference", "equivalent", "inconclusive")


def t_interval(mean: float, sd: float, n: int, level: float) -> tuple[float, float]:
    """The two-sided ``level`` t interval of a mean of ``n`` values with sample deviation ``sd``."""
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def tost_p(mean: float, sd: float, n: int, margin: float) -> float:
    """The p-value of the two one-sided tests of ``|true mean| < margin`` (the larger of the two p-values);
    with no spread (``sd == 0``) it is 0 inside the margin and 1 outside."""
    se = sd / math.sqrt(n)
    if se == 0:
        return 0.0 if -margin < mean < margin else 1.0
    above_lower = scipy_stats.t.sf((mean + margin) / se, n - 1)   # H0: mean <= -margin
    below_upper = scipy_stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(above_lower, below_upper))


def paired_stats(differences: Sequence[float], margin: float = DEFAULT_MARGIN) -> dict[str, Any]:
    """``{"n", "mean", "sd", "ci95", "ci90", "tost_p", "verdict"}`` of paired differences.

    ``sd`` is the sample deviation (n - 1); with one difference there is no deviation, interval or
    test (``None``) and the verdict is ``inconclusive``. The intervals are ``[low, high]``.
    """
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    values = [float(v) for v in differences]
    n = len(values)
    if n == 0:
        raise ValueError("paired statistics need at least one paired difference")
    mean = sum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci95": None, "ci90": None, "tost_p": None,
                "verdict": "inconclusive"}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    ci95, ci90 = t_interval(mean, sd, n, 0.95), t_interval(mean, sd, n, 0.90)
    p = tost_p(mean, sd, n, margin)
    if ci95[0] > 0 or ci95[1] < 0:
        verdict = "difference"
    elif -margin < ci90[0] and ci90[1] < margin:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return {"n": n, "mean": mean, "sd": sd, "ci95": list(ci95), "ci90": list(ci90), "tost_p": p, "verdict": verdict}
