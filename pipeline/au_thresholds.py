"""AU decision thresholds: chosen on held-out probabilities, carried by every model with AU outputs.

An AU is active on a frame when its sigmoid probability exceeds the AU's threshold. The paper
decides at a fixed 0.5; as our choice (``selection.au_thresholds``), each trainer may instead pick
the thresholds that maximise F1 on the held-out selection split (:mod:`pipeline.train.selection`),
never on the validation sets that are reported:

- ``fixed``: 0.5 for every AU;
- ``global``: one threshold for every AU, the one that maximises the mean F1 over the AUs;
- ``per_au``: each AU's own threshold, the one that maximises its F1.

The search (:func:`search_thresholds`) tries, per AU, the midpoints between consecutive sorted
unique probabilities of its labelled frames, a point below the lowest and above the highest (so
"every frame active" and "none active" are tried), and 0.5 itself. Decisions only change where a
probability is crossed, so these candidates reach every decision the data allows, and a midpoint
keeps the threshold away from the probabilities it separates. Among candidates with the best F1
(to 1e-12) the one nearest 0.5 wins (then the lower), so the fixed choice stays unless the data
pays for a move. An AU without a positive or without a negative labelled frame has no F1 to
maximise and keeps 0.5, recorded as such in ``status``.

:class:`AuThresholds` is what a model file holds under :data:`KEY` (``model.pt``'s dict, the ONNX
metadata): the 12 values, the strategy, each AU's status and where the values come from. A model
file without it (older, or a user's) reads as 0.5 everywhere (:func:`thresholds_of`).

Example:
    >>> probs = np.repeat([[0.2], [0.3], [0.35], [0.45], [0.7]], 12, axis=1)    # (5 frames, 12 AUs)
    >>> labels = np.repeat([[0], [0], [1], [1], [1]], 12, axis=1)
    >>> found = search_thresholds(probs, labels, "per_au", "held-out frames")
    >>> round(found.values[0], 3), found.status[0]
    (0.325, 'calibrated')
    >>> found.decide(np.log(probs / (1 - probs)))[:, 0].tolist()
    [0, 0, 1, 1, 1]
    >>> thresholds_of({}, "old.onnx").values == (0.5,) * 12
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

from pipeline.labels import AU_NAMES, NUM_AUS

KEY = "au_thresholds"          # the entry in model.pt's dict and in the ONNX metadata
FIXED = 0.5                    # the paper's decision threshold, and every AU's without calibration
STRATEGIES: tuple[str, ...] = ("fixed", "global", "per_au")
Strategy = Literal["fixed", "global", "per_au"]
CALIBRATED = "calibrated"
NO_POSITIVE, NO_NEGATIVE = "no positive", "no negative"
STATUSES: tuple[str, ...] = (CALIBRATED, NO_POSITIVE, NO_NEGATIVE, "fixed")
_TIE = 1e-12                   # F1 values this close are equal (floating sums of the same counts)


@dataclass(frozen=True)
class AuThresholds:
    """The 12 AU decision thresholds (probabilities in (0, 1)), how they were chosen and each AU's status."""

    values: tuple[float, ...]
    strategy: str = "fixed"
    status: tuple[str, ...] = ("fixed",) * NUM_AUS
    source: str = "fixed at 0.5"

    def __post_init__(self) -> None:
        if len(self.values) != NUM_AUS or len(self.status) != NUM_AUS:
            raise ValueError(f"AU thresholds need {NUM_AUS} values and statuses, got {len(self.values)} "
                             f"and {len(self.status)}")
        bad = [v for v in self.values if not (isinstance(v, (int, float)) and 0.0 < float(v) < 1.0)]
        if bad:
            raise ValueError(f"AU thresholds must be in (0, 1), got {bad[0]!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"AU threshold strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        unknown = sorted(set(self.status) - set(STATUSES))
        if unknown:
            raise ValueError(f"AU threshold status must be one of {list(STATUSES)}, got {unknown[0]!r}")

    def record(self) -> dict[str, Any]:
        """The plain dict a model file stores under :data:`KEY` (JSON and ``weights_only`` safe)."""
        return {"strategy": self.strategy, "values": [float(v) for v in self.values],
                "status": list(self.status), "source": self.source, "au_names": list(AU_NAMES)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> AuThresholds:
        """The thresholds of a :meth:`record` dict; ``ValueError`` naming ``where`` when it is malformed."""
        try:
            if list(record.get("au_names", AU_NAMES)) != list(AU_NAMES):
                raise ValueError(f"AU names {record['au_names']} are not {list(AU_NAMES)}")
            return cls(tuple(float(v) for v in record["values"]), str(record["strategy"]),
                       tuple(str(s) for s in record["status"]), str(record.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: unusable {KEY} entry ({exc})") from exc

    def logit_cuts(self) -> np.ndarray:
        """(12,) float64: an AU is active when its logit exceeds its cut (``sigmoid(x) > t <=> x > logit(t)``)."""
        return np.array([math.log(t / (1.0 - t)) for t in self.values])

    def decide(self, au_logits: np.ndarray) -> np.ndarray:
        """(..., 12) int8 decisions of (..., 12) AU logits."""
        return (np.asarray(au_logits, dtype=np.float64) > self.logit_cuts()).astype(np.int8)

    def describe(self) -> str:
        """One line for logs: the strategy and the values (or that they are the fixed 0.5)."""
        if all(s == "fixed" for s in self.status) or self.strategy == "fixed":
            return f"fixed 0.5 ({self.source})"
        values = ", ".join(f"{name} {value:.3f}" for name, value in zip(AU_NAMES, self.values))
        return f"{self.strategy} ({self.source}): {values}"


def fixed_thresholds(source: str = "fixed at 0.5") -> AuThresholds:
    """0.5 for every AU; ``source`` says why (e.g. the model file carries none)."""
    return AuThresholds((FIXED,) * NUM_AUS, "fixed", ("fixed",) * NUM_AUS, source)


def thresholds_of(container: Mapping[str, Any] | None, where: str) -> AuThresholds:
    """The :data:`KEY` entry of a model file's dict or metadata; 0.5 everywhere when it has none."""
    if not isinstance(container, Mapping) or KEY not in container:
        return fixed_thresholds(f"{where} carries no thresholds")
    return AuThresholds.from_record(container[KEY], where)


def probabilities(au_logits: np.ndarray) -> np.ndarray:
    """Sigmoid of AU logits, in float64 (what the search compares)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(au_logits, dtype=np.float64)))


def search_thresholds(probs: np.ndarray, labels: np.ndarray, strategy: Strategy, source: str) -> AuThresholds:
    """The thresholds of ``strategy`` that maximise F1 on (N, 12) ``probs`` against (N, 12) ``labels``
    (1, 0, or -1 unlabelled); ``source`` names the frames, for the record."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != NUM_AUS or labels.shape != probs.shape:
        raise ValueError(f"AU probabilities and labels must both be (N, {NUM_AUS}), got {probs.shape} and "
                         f"{labels.shape}")
    if strategy not in STRATEGIES:
        raise ValueError(f"AU threshold strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "fixed":
        return fixed_thresholds(source)
    split = [_classes(probs[:, k], labels[:, k]) for k in range(NUM_AUS)]
    status = tuple(CALIBRATED if len(pos) and len(neg) else NO_POSITIVE if not len(pos) else NO_NEGATIVE
                   for pos, neg in split)
    usable = [k for k in range(NUM_AUS) if status[k] == CALIBRATED]
    values = [FIXED] * NUM_AUS
    if strategy == "per_au":
        for k in usable:
            values[k] = _best(_candidates(np.concatenate(split[k])), [split[k]])
    elif usable:
        everything = np.concatenate([np.concatenate(split[k]) for k in usable])
        best = _best(_candidates(everything), [split[k] for k in usable])
        values = [best if k in usable else FIXED for k in range(NUM_AUS)]
    return AuThresholds(tuple(values), strategy, status, source)


def _classes(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted probabilities of one AU's positive and negative labelled frames."""
    return np.sort(probs[labels == 1]), np.sort(probs[labels == 0])


def _candidates(probs: np.ndarray) -> np.ndarray:
    """Midpoints of the sorted unique ``probs``, one point beyond each end (inside (0, 1)), and 0.5."""
    unique = np.unique(probs)
    points = [(unique[:-1] + unique[1:]) / 2.0, [FIXED]]
    if unique[0] > 0.0:
        points.append([unique[0] / 2.0])
    if unique[-1] < 1.0:
        points.append([(unique[-1] + 1.0) / 2.0])
    found = np.unique(np.concatenate(points))
    return found[(found > 0.0) & (found < 1.0)]


def _best(candidates: np.ndarray, classes: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The candidate with the highest mean F1 over ``classes`` (per AU: sorted positive and negative
    probabilities), ties to the one nearest 0.5, then the lower."""
    total = np.zeros(len(candidates))
    for pos, neg in classes:
        tp = len(pos) - np.searchsorted(pos, candidates, side="right")
        fp = len(neg) - np.searchsorted(neg, candidates, side="right")
        total += 2.0 * tp / (len(pos) + tp + fp)        # 2TP / (2TP + FP + FN), FN = P - TP
    mean = total / len(classes)
    tied = np.flatnonzero(mean >= mean.max() - _TIE)
    order = np.lexsort((candidates[tied], np.abs(candidates[tied] - FIXED)))
    return float(candidates[tied[order[0]]])
