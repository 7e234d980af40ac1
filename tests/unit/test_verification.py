"""Verification metric on hand-checkable pairs: best threshold, LFW 10-fold accuracy, TAR@FAR."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.verification import (
    best_threshold, cosine_scores, kfold_accuracy, sample_pairs, tar_at_far, verification_scores,
)


def test_cosine_scores_of_row_pairs() -> None:
    assert np.allclose(cosine_scores(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 3.0], [2.0, 2.0]])), [0, 1])


def test_best_threshold_lies_between_scores() -> None:
    threshold, accuracy = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, True, False, True]))
    assert (threshold, accuracy) == (pytest.approx(0.375), 1.0)
    # one genuine pair below an impostor: 3 of 4 at best
    threshold, accuracy = best_threshold(np.array([0.1, 0.2, 0.35, 0.8]), np.array([False, True, False, True]))
    assert accuracy == 0.75 and threshold == pytest.approx(0.15)   # the lowest of the best


def test_kfold_accuracy_uses_the_threshold_of_the_other_nine_folds() -> None:
    # ten pairs, one per fold; the pair in fold 3 is a genuine pair scoring below every impostor.
    scores = np.array([0.9, 0.1] * 5)
    same = np.array([True, False] * 5)
    scores[2] = 0.05
    result = kfold_accuracy(scores, same, folds=10)
    assert result["fold_accuracy"] == [1.0, 1.0, 0.0] + [1.0] * 7
    assert result["accuracy"] == pytest.approx(0.9)
    assert result["thresholds"][2] == 0.5   # learnt without the hard pair: between 0.1 and 0.9
    assert result["std"] == pytest.approx(0.3)


def test_folds_are_consecutive() -> None:
    # 23 sorted scores i/22, same-identity above 0.5. Fold 4 holds pairs 10, 11 (0.45, 0.50: different);
    # trained without them the threshold is (0.41 + 0.55) / 2 and accepts 0.50. Fold 5 holds 12, 13
    # (0.55, 0.59: same); trained without them it is (0.50 + 0.64) / 2 and rejects 0.55.
    scores = np.arange(23) / 22
    result = kfold_accuracy(scores, scores > 0.5)
    assert result["fold_accuracy"] == [1.0] * 4 + [0.5, 0.5] + [1.0] * 4
    assert result["accuracy"] == pytest.approx(0.9)


def test_tar_at_far_from_the_impostor_scores() -> None:
    impostor = np.arange(1000) / 1000.0                      # 0.000 .. 0.999
    genuine = np.array([0.9985, 0.9995, 0.5, 1.0])
    scores = np.concatenate([impostor, genuine])
    same = np.concatenate([np.zeros(1000, bool), np.ones(4, bool)])
    at_1e3 = tar_at_far(scores, same, far=1e-3)             # one impostor (0.999) may pass
    assert at_1e3["tar"] == 0.75 and at_1e3["far"] == 0.001 and 0.998 < at_1e3["threshold"] <= 0.999
    at_1e4 = tar_at_far(scores, same, far=1e-4)             # none may pass
    assert at_1e4["tar"] == 0.5 and at_1e4["far"] == 0.0


def test_sample_pairs_are_seeded_and_labelled_right() -> None:
    labels = np.repeat(np.arange(6), 4)
    first, second, same = sample_pairs(labels, 50, seed=3)
    assert len(first) == 100 and same.sum() == 50
    assert np.array_equal(labels[first] == labels[second], same)
    assert not np.any(first == second)
    again = sample_pairs(labels, 50, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((first, second, same), again))


def test_separated_embeddings_verify_perfectly_and_mixed_ones_at_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 5)
    centres = rng.normal(size=(40, 32))
    first, second, same = sample_pairs(labels, 300, seed=0)
    clean = verification_scores(centres[labels] + 0.05 * rng.normal(size=(200, 32)), first, second, same)
    assert clean["accuracy"] == 1.0 and clean["tar_at_far"] == 1.0
    noise = verification_scores(rng.normal(size=(200, 32)), first, second, same)
    assert 0.35 < noise["accuracy"] < 0.65 and noise["tar_at_far"] < 0.05


@pytest.mark.parametrize("scores,same,message", [
    (np.array([0.1, 0.2]), np.array([True, True]), "both same-identity and different-identity"),
    (np.array([0.1, 0.2]), np.array([True]), "one length"),
    (np.array([0.1, np.nan]), np.array([True, False]), "finite"),
    (np.array([0.1, 0.2]), np.array([1, 0]), "boolean"),
])
def test_bad_inputs_are_named(scores: np.ndarray, same: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tar_at_far(scores, same)


def test_more_folds_than_pairs_is_an_error() -> None:
    with pytest.raises(ValueError, match="folds must be in"):
        kfold_accuracy(np.array([0.1, 0.9, 0.2]), np.array([False, True, False]), folds=10)
