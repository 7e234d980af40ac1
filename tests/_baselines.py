"""The trivial baselines learning tests must beat: the best constant prediction on the same labels.

A model that learned nothing can still output a constant; the best constant (every AU off or every
AU on; the one expression class that scores best) is the floor a learning test's margin sits on.
"""

from __future__ import annotations

import numpy as np

from pipeline.labels import NUM_AUS, NUM_EXPRS
from pipeline.metrics import au_metrics, expr_metrics


def trivial_au_score(y_true: np.ndarray) -> float:
    """The better ABAW AU score of predicting every AU off and of predicting every AU on."""
    y_true = np.asarray(y_true).reshape(-1, NUM_AUS)
    return max(au_metrics(y_true, np.full(y_true.shape, value))["score"] for value in (0, 1))


def trivial_expr_score(y_true: np.ndarray) -> float:
    """The best ABAW expression score of predicting one class for every frame."""
    y_true = np.asarray(y_true).reshape(-1)
    return max(expr_metrics(y_true, np.full(y_true.shape, c))["score"] for c in range(NUM_EXPRS))
