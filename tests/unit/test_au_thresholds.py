"""The AU threshold search on hand-built probabilities, its edge cases, and the record model files carry."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.au_thresholds import (
    FIXED, KEY, NO_NEGATIVE, NO_POSITIVE, AuThresholds, fixed_thresholds, probabilities, search_thresholds,
    thresholds_of,
)
from pipeline.labels import NUM_AUS
from pipeline.metrics import au_per_class_f1


def _tile(column: list[float], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The same AU column repeated for all 12 AUs."""
    return (np.tile(np.asarray(column, float)[:, None], (1, NUM_AUS)),
            np.tile(np.asarray(labels, np.int8)[:, None], (1, NUM_AUS)))


def test_per_au_finds_the_known_optimum() -> None:
    # AU 0: positives above 0.3 -> every positive above the midpoint 0.325, no negative: F1 = 1.
    # AU 1: the positives sit low (0.1, 0.15), the negatives high: the best cut is below them all
    # or between 0.15 and 0.6; F1 = 1 at the midpoint 0.375 (0.15 < t < 0.6 gives TP = 2, FP = 0)...
    probs = np.full((6, NUM_AUS), 0.9)
    labels = np.ones((6, NUM_AUS), np.int8)
    probs[:, 0], labels[:, 0] = [0.2, 0.3, 0.35, 0.45, 0.7, 0.1], [0, 0, 1, 1, 1, 0]
    # ...AU 1 is a case where only a cut above 0.5 reaches the optimum: negatives at 0.55, 0.6
    probs[:, 1], labels[:, 1] = [0.55, 0.6, 0.65, 0.8, 0.9, 0.1], [0, 0, 1, 1, 1, 0]
    found = search_thresholds(probs, labels, "per_au", "test")
    assert found.values[0] == pytest.approx(0.325)
    assert found.values[1] == pytest.approx(0.625)
    decided = found.decide(np.log(probs / (1 - probs)))
    f1 = au_per_class_f1(labels, decided)
    assert f1[0] == f1[1] == 1.0
    assert f1[0] > au_per_class_f1(labels, (probs > 0.5).astype(np.int8))[0]


def test_per_au_matches_an_exhaustive_search() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((200, NUM_AUS))
    labels = (rng.random((200, NUM_AUS)) < probs * 0.8).astype(np.int8)
    labels[rng.random((200, NUM_AUS)) < 0.1] = -1
    found = search_thresholds(probs, labels, "per_au", "test")
    grid = np.linspace(0.0005, 0.9995, 2000)
    for k in range(NUM_AUS):
        best_grid = max(au_per_class_f1(labels, (probs > t).astype(np.int8))[k] for t in grid)
        ours = au_per_class_f1(labels, found.decide(np.log(probs / (1 - probs))))[k]
        assert ours >= best_grid - 1e-12


def test_ties_go_to_the_threshold_nearest_one_half() -> None:
    # Every cut between 0.2 and 0.8 separates the classes perfectly: 0.5 itself is kept.
    probs, labels = _tile([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert search_thresholds(probs, labels, "per_au", "test").values == (FIXED,) * NUM_AUS
    # Perfect cuts lie only between 0.6 and 0.7: the one nearest 0.5 is their midpoint.
    probs, labels = _tile([0.1, 0.6, 0.7, 0.9], [0, 0, 1, 1])
    assert search_thresholds(probs, labels, "per_au", "test").values[0] == pytest.approx(0.65)


def test_every_frame_active_is_reachable() -> None:
    # Positives everywhere but one negative at the very top: the best F1 marks every frame active.
    probs, labels = _tile([0.05, 0.1, 0.2, 0.3, 0.99], [1, 1, 1, 1, 0])
    found = search_thresholds(probs, labels, "per_au", "test")
    assert found.values[0] == pytest.approx(0.025)
    assert found.decide(np.log(probs / (1 - probs)))[:4, 0].tolist() == [1, 1, 1, 1]


def test_an_au_without_positives_or_negatives_keeps_one_half() -> None:
    probs, labels = _tile([0.1, 0.4, 0.7, 0.9], [0, 1, 1, 1])
    labels[:, 3] = 0           # no positive
    labels[:, 5] = 1           # no negative
    labels[:, 7] = -1          # nothing labelled
    for strategy in ("per_au", "global"):
        found = search_thresholds(probs, labels, strategy, "test")
        assert found.status[3] == found.status[7] == NO_POSITIVE and found.status[5] == NO_NEGATIVE
        assert found.values[3] == found.values[5] == found.values[7] == FIXED
        assert found.values[0] == pytest.approx(0.25) and found.status[0] == "calibrated"


def test_global_maximises_the_mean_f1_with_one_value() -> None:
    # AU 0 wants 0.25, AU 1 wants 0.75; every other AU is perfect anywhere in (0.2, 0.8).
    probs, labels = _tile([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    probs[:, 0], labels[:, 0] = [0.1, 0.2, 0.3, 0.9], [0, 0, 1, 1]
    probs[:, 1], labels[:, 1] = [0.1, 0.6, 0.7, 0.9], [0, 0, 1, 1]
    found = search_thresholds(probs, labels, "global", "test")
    assert len(set(found.values)) == 1
    decided = found.decide(np.log(probs / (1 - probs)))
    best_single = max(au_per_class_f1(labels, (probs > t).astype(np.int8)).mean() for t in np.linspace(0.01, 0.99, 99))
    assert au_per_class_f1(labels, decided).mean() >= best_single - 1e-12


def test_fixed_strategy_and_bad_shapes() -> None:
    probs, labels = _tile([0.1, 0.9], [0, 1])
    assert search_thresholds(probs, labels, "fixed", "x").values == (FIXED,) * NUM_AUS
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        search_thresholds(probs[:, :3], labels[:, :3], "per_au", "x")


def test_record_round_trip_and_missing_entries() -> None:
    probs, labels = _tile([0.1, 0.3, 0.6, 0.9], [0, 1, 1, 1])
    found = search_thresholds(probs, labels, "per_au", "held-out face frames")
    assert thresholds_of({KEY: found.record()}, "model.pt") == found
    assert thresholds_of({"arch": {}}, "old.pt") == fixed_thresholds("old.pt carries no thresholds")
    assert thresholds_of(None, "x").values == (FIXED,) * NUM_AUS
    broken = {**found.record(), "values": [0.5] * 11}
    with pytest.raises(ValueError, match=r"^model.pt: unusable au_thresholds entry"):
        thresholds_of({KEY: broken}, "model.pt")
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        AuThresholds((1.0,) * NUM_AUS)


def test_decisions_equal_probability_comparisons() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (500, NUM_AUS))
    found = AuThresholds(tuple(np.linspace(0.1, 0.9, NUM_AUS)), "per_au", ("calibrated",) * NUM_AUS)
    expected = (probabilities(logits) > np.asarray(found.values)).astype(np.int8)
    assert np.array_equal(found.decide(logits), expected)
    assert np.array_equal(fixed_thresholds().decide(logits), (logits > 0).astype(np.int8))
