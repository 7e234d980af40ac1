"""The gate a pretraining passes before its backbone is published: did it learn anything?

A margin-softmax pretraining can run its epochs and end where it started: the loss at the level of
random embeddings (:func:`pipeline.models.margin.chance_loss`) and held-out verification no better
than the starting weights'. Publishing such a backbone would hand fine-tuning random weights under
the name of a pretrained one. So the kept epoch's held-out pair accuracy must beat the starting
weights' (``initial``) by at least ``min_gain``; otherwise :func:`check_learned` raises
:class:`NotLearnedError`, one line that gives the accuracies and the last loss against chance.

Example:
    >>> metrics = {"verification": {"accuracy": 0.61}, "initial": {"accuracy": 0.59},
    ...            "history": [{"loss": 36.3}], "chance_loss": 36.46}
    >>> check_learned(metrics, min_gain=0.1, kept_at="refused.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.train.pretrain_gate.NotLearnedError: pretrain-face did not learn: held-out verification 0.61 vs 0.59 ...
    >>> check_learned(metrics, min_gain=None, kept_at="refused.json")   # no gate: passes
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


class NotLearnedError(ValueError):
    """A pretraining whose kept epoch did not beat its starting weights on held-out verification."""


def gain(metrics: Mapping[str, Any]) -> float:
    """The kept epoch's held-out pair accuracy minus the starting weights'."""
    return float(metrics["verification"]["accuracy"]) - float(metrics["initial"]["accuracy"])


def check_learned(metrics: Mapping[str, Any], min_gain: float | None, kept_at: str | Path) -> None:
    """Raise :class:`NotLearnedError` unless :func:`gain` of ``metrics`` (the metrics file's content:
    ``verification``, ``initial``, ``history``, ``chance_loss``) is at least ``min_gain``
    (``None``: no gate). ``kept_at`` is where the refused run's metrics are kept, for the message."""
    if min_gain is None or gain(metrics) >= min_gain:
        return
    history = metrics["history"]
    last = f"last epoch's loss {history[-1]['loss']:.1f}" if history else "no epoch trained"
    raise NotLearnedError(
        f"pretrain-face did not learn: held-out verification {metrics['verification']['accuracy']:.2f} vs "
        f"{metrics['initial']['accuracy']:.2f} at the start (needs +{min_gain:.2f}); {last} against a chance "
        f"loss of {metrics['chance_loss']:.1f}; nothing published (this run's metrics: {kept_at})"
    )
