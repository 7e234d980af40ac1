"""Face verification scores from embeddings of image pairs: LFW's 10-fold accuracy and TAR@FAR.

A pair is "same" when both images show one identity. The score of a pair is the cosine similarity
of its two embeddings; a pair is accepted as same when its score is >= a threshold.

- ``kfold_accuracy``: the LFW protocol. The pairs are cut into 10 consecutive folds; for each fold
  the threshold that maximises accuracy on the other 9 is applied to it; the mean (and std) of the
  10 test-fold accuracies is reported.
- ``tar_at_far``: the true accept rate at the threshold where at most ``far`` of the different-identity
  pairs are accepted (1e-3 by default, as IJB-style benchmarks report it).

    >>> import numpy as np
    >>> scores = np.array([0.9, 0.8, 0.3, 0.1] * 5)
    >>> same = np.array([True, True, False, False] * 5)
    >>> kfold_accuracy(scores, same)["accuracy"], tar_at_far(scores, same, far=0.1)["tar"]
    (1.0, 1.0)
"""

from __future__ import annotations

import numpy as np


def cosine_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity (N,) of row i of ``first`` (N, D) with row i of ``second`` (N, D)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"need two (N, D) arrays of one shape, got {first.shape} and {second.shape}")
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.einsum("nd,nd->n", first, second) / np.maximum(norms, 1e-12)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) of the threshold that classifies ``scores`` best (the lowest such one).

    Candidates are the midpoints between consecutive distinct scores, -inf (accept all) and +inf
    (accept none): a threshold between two scores generalises better than one on a score.
    """
    scores, same = _check(scores, same)
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    distinct = np.unique(scores)
    candidates = np.concatenate([[-np.inf], (distinct[1:] + distinct[:-1]) / 2, [np.inf]])
    accepted_genuine = len(genuine) - np.searchsorted(genuine, candidates, side="left")
    rejected_impostor = np.searchsorted(impostor, candidates, side="left")
    accuracy = (accepted_genuine + rejected_impostor) / len(scores)
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> dict[str, object]:
    """LFW-protocol accuracy: threshold from 9 folds, accuracy on the 10th, over consecutive folds.

    Returns ``{"accuracy": mean, "std": std over folds, "fold_accuracy": [...], "thresholds": [...]}``.
    """
    scores, same = _check(scores, same)
    if not 2 <= folds <= len(scores):
        raise ValueError(f"folds must be in [2, {len(scores)}] for {len(scores)} pairs, got {folds}")
    fold_of = np.arange(len(scores)) * folds // len(scores)   # consecutive, sizes differ by at most 1
    accuracies, thresholds = [], []
    for k in range(folds):
        test = fold_of == k
        threshold, _ = best_threshold(scores[~test], same[~test])
        accuracies.append(float(np.mean((scores[test] >= threshold) == same[test])))
        thresholds.append(threshold)
    return {"accuracy": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "fold_accuracy": accuracies, "thresholds": thresholds}


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = 1e-3) -> dict[str, float]:
    """True accept rate at the lowest threshold accepting at most ``far`` of the impostor pairs.

    Returns ``{"tar", "far" (the rate reached), "threshold"}``. With fewer than 1/far impostor pairs
    the threshold lies above every impostor score (FAR 0).
    """
    scores, same = _check(scores, same)
    if not 0.0 < far < 1.0:
        raise ValueError(f"far must be in (0, 1), got {far}")
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    # accept scores >= threshold: just above the (allowed+1)-th highest impostor score
    threshold = float(np.nextafter(impostor[allowed], np.inf))   # allowed < len(impostor) as far < 1
    return {"tar": float(np.mean(scores[same] >= threshold)),
            "far": float(np.mean(impostor >= threshold)), "threshold": threshold}


def sample_pairs(labels: np.ndarray, pairs_per_kind: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, same)``: ``pairs_per_kind`` same-identity and as many different-identity pairs of
    image indices into ``labels``, shuffled (seeded); no image is paired with itself."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.nonzero(labels == c)[0] for c in np.unique(labels)]
    multi = [g for g in groups if len(g) >= 2]
    if not multi or len(groups) < 2:
        raise ValueError(f"need >= 2 identities, one with >= 2 images; got {len(groups)} identities")
    pairs = []
    for _ in range(pairs_per_kind):
        group = multi[rng.integers(len(multi))]
        i, j = rng.choice(group, 2, replace=False)
        pairs.append((i, j, True))
    for _ in range(pairs_per_kind):
        a, b = rng.choice(len(groups), 2, replace=False)
        pairs.append((rng.choice(groups[a]), rng.choice(groups[b]), False))
    order = rng.permutation(len(pairs))
    first, second, same = (np.array(column) for column in zip(*[pairs[k] for k in order]))
    return first.astype(np.int64), second.astype(np.int64), same.astype(bool)


def verification_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, same: np.ndarray,
                        far: float = 1e-3) -> dict[str, float]:
    """``{"accuracy", "accuracy_std", "tar_at_far", "far"}`` of embedding pairs ``(first[i], second[i])``."""
    scores = cosine_scores(embeddings[first], embeddings[second])
    folds = kfold_accuracy(scores, same)
    tar = tar_at_far(scores, same, far)
    return {"accuracy": folds["accuracy"], "accuracy_std": folds["std"], "tar_at_far": tar["tar"], "far": far}


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same)
    if scores.ndim != 1 or scores.shape != same.shape:
        raise ValueError(f"scores and same must be (N,) arrays of one length, got {scores.shape} and {same.shape}")
    if same.dtype != bool:
        raise ValueError(f"same must be boolean, got {same.dtype}")
    if same.all() or not same.any():
        raise ValueError("need both same-identity and different-identity pairs")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, same
