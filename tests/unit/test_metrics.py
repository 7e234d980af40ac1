"""ABAW metrics against scikit-learn on random inputs with unlabelled entries and on edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from pipeline.metrics import au_metrics, au_per_class_f1, expr_macro_f1, expr_metrics, expr_per_class_f1


def _sk_au(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Per-AU binary F1 over each AU's labelled entries, mean F1 and element-wise accuracy."""
    per = []
    for k in range(12):
        keep = y_true[:, k] >= 0
        per.append(f1_score(y_true[keep, k], y_pred[keep, k], zero_division=0) if keep.any() else 0.0)
    labelled = y_true >= 0
    acc = accuracy_score(y_true[labelled], y_pred[labelled]) if labelled.any() else 0.0
    return float(np.mean(per)), float(acc), np.array(per)


def _sk_expr(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, np.ndarray]:
    keep = y_true >= 0
    if not keep.any():
        return 0.0, 0.0, np.zeros(7)
    per = f1_score(y_true[keep], y_pred[keep], labels=range(7), average=None, zero_division=0)
    macro = f1_score(y_true[keep], y_pred[keep], labels=range(7), average="macro", zero_division=0)
    return float(macro), float(accuracy_score(y_true[keep], y_pred[keep])), per


@pytest.mark.parametrize("seed", range(6))
def test_au_matches_sklearn_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    y_true = rng.integers(0, 2, size=(n, 12)) * (rng.random((n, 12)) < rng.random(12))  # sparse AUs
    y_true[rng.random(n) < 0.2] = -1                      # unlabelled rows
    y_true[rng.random((n, 12)) < 0.05] = -1               # and scattered unlabelled entries
    y_pred = rng.integers(0, 2, size=(n, 12))
    f1, acc, per = _sk_au(y_true, y_pred)
    m = au_metrics(y_true, y_pred)
    np.testing.assert_allclose(au_per_class_f1(y_true, y_pred), per, atol=1e-12)
    assert m["f1"] == pytest.approx(f1, abs=1e-12)
    assert m["acc"] == pytest.approx(acc, abs=1e-12)
    assert m["score"] == pytest.approx(0.5 * f1 + 0.5 * acc, abs=1e-12)
    assert au_metrics(y_true, y_pred, variant="abaw3") == {"f1": m["f1"], "acc": m["acc"], "score": m["f1"]}


@pytest.mark.parametrize("seed", range(6))
def test_expr_matches_sklearn_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 400))
    n_classes = int(rng.integers(2, 8))                   # sometimes classes are absent from truth
    y_true = rng.integers(0, n_classes, size=n)
    y_true[rng.random(n) < 0.25] = -1
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, size=n)).clip(0, 6)
    f1, acc, per = _sk_expr(y_true, y_pred)
    m = expr_metrics(y_true, y_pred)
    np.testing.assert_allclose(expr_per_class_f1(y_true, y_pred), per, atol=1e-12)
    assert m["f1"] == pytest.approx(f1, abs=1e-12)
    assert m["acc"] == pytest.approx(acc, abs=1e-12)
    assert m["score"] == pytest.approx(0.67 * f1 + 0.33 * acc, abs=1e-12)
    assert expr_metrics(y_true, y_pred, variant="abaw3")["score"] == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_expr_present_classes_match_sklearn_without_labels(seed: int) -> None:
    # The ABAW script's macro F1: scikit-learn averages over the classes found in truth or prediction.
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(1, 300))
    true_classes = rng.choice(7, size=int(rng.integers(1, 8)), replace=False)
    pred_classes = rng.choice(7, size=int(rng.integers(1, 8)), replace=False)
    y_true = rng.choice(true_classes, size=n)
    y_true[rng.random(n) < 0.2] = -1
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(pred_classes, size=n)).clip(0, 6)
    keep = y_true >= 0
    m = expr_metrics(y_true, y_pred, classes="present")
    if keep.any():
        assert m["f1"] == pytest.approx(f1_score(y_true[keep], y_pred[keep], average="macro"), abs=1e-12)
        assert m["acc"] == pytest.approx(accuracy_score(y_true[keep], y_pred[keep]), abs=1e-12)
    assert m["score"] == pytest.approx(0.67 * m["f1"] + 0.33 * m["acc"], abs=1e-12)
    assert expr_metrics(y_true, y_pred, classes="all")["f1"] == pytest.approx(_sk_expr(y_true, y_pred)[0], abs=1e-12)


def test_expr_class_sets_differ_only_where_a_class_is_absent() -> None:
    y_true = np.array([0, 1, 2, 3, 4, 5, 0, 1])            # Surprise (6) absent from truth ...
    assert expr_macro_f1(y_true, y_true, "present") == 1.0  # ... and from prediction: not averaged
    assert expr_macro_f1(y_true, y_true, "all") == pytest.approx(6 / 7)
    predicted = y_true.copy()
    predicted[0] = 6                                       # predicted once: Surprise counts, with F1 0
    assert expr_macro_f1(y_true, predicted, "present") == pytest.approx(
        f1_score(y_true, predicted, average="macro"))
    assert expr_macro_f1(y_true, predicted, "present") == pytest.approx(
        expr_macro_f1(y_true, predicted, "all"))
    every = np.arange(7)
    assert expr_macro_f1(every, every, "present") == expr_macro_f1(every, every, "all") == 1.0
    assert expr_macro_f1(np.full(3, -1), np.zeros(3, dtype=int), "present") == 0.0
    with pytest.raises(ValueError, match="'some'"):
        expr_macro_f1(every, every, "some")


def test_au_f1_is_sklearn_multilabel_macro_f1_on_fully_labelled_frames() -> None:
    # The AU F1 the ABAW scripts compute: scikit-learn's macro F1 over the 12 label columns at once.
    rng = np.random.default_rng(7)
    y_true = (rng.random((150, 12)) < rng.random(12)).astype(int)
    y_true[:, 3] = 0                                       # an AU never active: F1 0, as zero_division=0
    y_pred = (rng.random((150, 12)) < 0.3).astype(int)
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert au_metrics(y_true, y_pred)["f1"] == pytest.approx(expected, abs=1e-12)


def test_au_with_no_positives_counts_as_zero_f1() -> None:
    y_true = np.zeros((6, 12), dtype=int)
    y_true[:3, :11] = 1                                    # AU26 never positive in truth
    y_pred = y_true.copy()                                 # ... nor predicted
    m = au_metrics(y_true, y_pred)
    assert m["f1"] == pytest.approx(11 / 12)               # sklearn: F1 = 0 when undefined
    assert m["acc"] == 1.0
    assert m["f1"] == pytest.approx(_sk_au(y_true, y_pred)[0])


def test_au_fully_unlabelled_column() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, size=(20, 12))
    y_true[:, 4] = -1
    y_pred = rng.integers(0, 2, size=(20, 12))
    per = au_per_class_f1(y_true, y_pred)
    assert per[4] == 0.0
    f1, acc, _ = _sk_au(y_true, y_pred)
    assert au_metrics(y_true, y_pred)["f1"] == pytest.approx(f1)
    assert au_metrics(y_true, y_pred)["acc"] == pytest.approx(acc)


def test_expr_class_absent_from_truth_and_prediction_counts_as_zero() -> None:
    y_true = np.array([0, 1, 2, 3, 4, 5, 0, 1])            # Surprise (6) absent
    y_pred = y_true.copy()
    m = expr_metrics(y_true, y_pred)
    assert m["f1"] == pytest.approx(6 / 7)
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred, labels=range(7), average="macro", zero_division=0))
    assert m["acc"] == 1.0


def test_unlabelled_predictions_do_not_count() -> None:
    y_true = np.array([3, -1, -1, 3])
    y_pred = np.array([3, 0, 6, 3])                        # wrong where unlabelled
    m = expr_metrics(y_true, y_pred)
    assert m["acc"] == 1.0 and m["f1"] == pytest.approx(1 / 7)


def test_all_unlabelled() -> None:
    assert au_metrics(np.full((4, 12), -1), np.ones((4, 12), dtype=int)) == {"f1": 0.0, "acc": 0.0, "score": 0.0}
    assert expr_metrics(np.full(5, -1), np.zeros(5, dtype=int)) == {"f1": 0.0, "acc": 0.0, "score": 0.0}
    assert au_metrics(np.zeros((0, 12), dtype=int), np.zeros((0, 12), dtype=int))["score"] == 0.0


def test_perfect_and_inverted_predictions() -> None:
    y = np.tile([1, 0], (5, 6))
    y[0] = 1 - y[0]                                        # every AU has positives and negatives
    assert au_metrics(y, y)["score"] == 1.0
    inverted = au_metrics(y, 1 - y)
    assert inverted["acc"] == 0.0 and inverted["f1"] == 0.0
    labels = np.arange(7)
    assert expr_metrics(labels, labels)["score"] == pytest.approx(1.0)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="variant"):
        au_metrics(np.zeros((1, 12)), np.zeros((1, 12)), variant="abaw9")
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        au_metrics(np.zeros((3, 11)), np.zeros((3, 11)))
    with pytest.raises(ValueError, match="AU labels"):
        au_metrics(np.full((1, 12), 2), np.zeros((1, 12)))
    with pytest.raises(ValueError, match="AU predictions"):
        au_metrics(np.zeros((1, 12)), np.full((1, 12), -1))
    with pytest.raises(ValueError, match="expression labels"):
        expr_metrics(np.array([7]), np.array([0]))
    with pytest.raises(ValueError, match="expression predictions"):
        expr_metrics(np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match="integer class indices"):
        expr_metrics(np.array([0.0, 1.0]), np.array([0.7, 1.0]))
    with pytest.raises(ValueError, match="integer class indices"):
        expr_metrics(np.array([np.nan, 1.0]), np.array([0, 1]))
    assert expr_metrics(np.array([0.0, 1.0]), np.array([0.0, 1.0]))["acc"] == 1.0
    with pytest.raises(ValueError, match=r"\(N,\)"):
        expr_metrics(np.zeros(3), np.zeros(4))
