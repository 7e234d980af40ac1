"""The valence-arousal task in the trainers that read the visual store (``train-audio``, ``train-sequence``).

Three pieces both trainers share: the VA labels of a subject as the visual store holds them
(:func:`read_va_labels`; a store written before VA, or a dataset without ``VA_Set``, has none and
every frame reads as unlabelled), the task rotation (:func:`task_rotation`: expression, AU, then VA,
each only when the training split has its labels); the ``va`` entry of a report is
:func:`pipeline.train.loop.subject_metrics`'s, given the VA labels as each subject's fourth label array.

Example:
    >>> import numpy as np
    >>> va_labelled(np.array([[0.1, np.nan], [np.nan, np.nan]], np.float32)).tolist()
    [True, False]
    >>> task_rotation({"au": True, "expr": True, "va": False}, "train_x")
    ('expr', 'au')
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np

from pipeline.config import ConfigError
from pipeline.labels import NUM_VA
from pipeline.storage.embedding_store import EmbeddingStore
from pipeline.train.alternating import ROTATION

log = logging.getLogger(__name__)

VA_ARRAY = "va"                       # the visual store's (N, 2) float32 labels, NaN unlabelled


def read_va_labels(store: EmbeddingStore, key: str, n_frames: int) -> np.ndarray:
    """Subject ``key``'s (N, 2) float32 VA labels from the visual store; all NaN where it has none.

    A store made before the VA task, or from a dataset without ``VA_Set``, holds no ``va`` array:
    its frames are VA-unlabelled, so the trainers go on with AU and expression alone.
    """
    va = read_va_array(store, key, n_frames, VA_ARRAY)
    return np.full((n_frames, NUM_VA), np.nan, np.float32) if va is None else va


def read_va_array(store: EmbeddingStore, key: str, n_frames: int, name: str) -> np.ndarray | None:
    """The (N, 2) float32 array ``name`` (``va`` or ``va_pred``) of complete entry ``key``; ``None``
    when the entry has no such array (a store written before the VA task)."""
    try:
        va = store.read(key, (name,))[name]
    except KeyError:   # the entry is complete (checked by the caller) and lacks only this array
        return None
    if va.shape != (n_frames, NUM_VA):
        raise ValueError(f"{store.path}/{key}: {name} has shape {va.shape}, expected ({n_frames}, {NUM_VA})")
    return va.astype(np.float32, copy=False)


def check_va_mse_weight(value: float) -> None:
    """Refuse a ``va_mse_weight`` params value that is not a finite number >= 0 (``ConfigError``)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"must be a finite number >= 0, got {value}", key="va_mse_weight")


def va_labelled(va: np.ndarray) -> np.ndarray:
    """(N,) bool: the frames of (N, 2) ``va`` with a valence or an arousal label."""
    return ~np.isnan(va).all(axis=-1)


def task_rotation(has_labels: Mapping[str, bool], section: str) -> tuple[str, ...]:
    """The tasks a trainer rotates, in :data:`ROTATION` order: those whose training split has labels.

    Logs one INFO line when VA is skipped (a dataset without ``VA_Set`` trains as it did before VA);
    raises ``ValueError`` when no task has a training label.
    """
    tasks = tuple(task for task in ROTATION if has_labels.get(task, False))
    if not has_labels.get("va", False):
        log.info("%s: no VA labels in the training split; the va task is skipped", section)
    if not tasks:
        raise ValueError(f"{section}: no labelled training frames for any task ({', '.join(ROTATION)})")
    return tasks


