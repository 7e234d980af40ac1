"""Model selection: which frames pick the epoch a trainer publishes, and the held-out selection split.

Every trainer scores each epoch and keeps one. Where that score comes from is the ``selection``
params section, shared by ``finetune-visual``, ``train-audio`` and ``train-sequence``:

- ``holdout`` (the default, our choice): a share of the Aff-Wild2 *training videos* is held out of
  training; the epoch with the best ABAW score on their subjects is kept. The validation sets are
  then only reported, never used to choose, so the validation numbers are untouched by selection.
- ``validation``: the best epoch on the validation sets themselves (what this pipeline did before):
  the reported validation score then includes the choice, so it is optimistic.
- ``last``: the final epoch is kept; nothing is scored to choose.

The held-out videos are one function of the manifest, ``share`` and ``seed`` (:func:`carve_selection`),
so the three trainers hold out the same subjects: the audio and sequence models, which read the
visual model's embeddings, are never selected on frames the visual model trained on. Videos, not
subjects, are held out: the two faces of a two-subject video share a scene and a soundtrack. BP4D
stays training data (it has no audio and is not in-the-wild).

The selection score is the mean of the ABAW scores of the tasks present (AU, EXPR and, where the
held-out subjects carry VA labels, valence-arousal) on ``face_frames`` (frames with a face crop, the
frames the paper scores, §4.4), whatever the trainer and the mode. Valence-arousal takes part in
the held-out split like the other tasks: a video training VA counts towards its quota.

``au_thresholds`` (our choice; the paper decides at 0.5) says how the kept model's AU decision
thresholds are chosen (:mod:`pipeline.au_thresholds`): on the same held-out ``face_frames``, after
the epoch is kept (:func:`calibrate_au`). With ``validation`` or ``last`` there is no held-out split
and the thresholds stay at 0.5: choosing them on the validation sets would flatter the reported
scores, and on the training frames, which the model fits, would push them the wrong way.

Example:
    >>> from pipeline.data.manifest import Manifest, SubjectRecord
    >>> records = tuple(SubjectRecord(f"v{i}", f"v{i}", au_split="train", expr_split="train") for i in range(5))
    >>> split = carve_selection(Manifest("root", records), share=0.2, seed=0)
    >>> len(split.videos), split.subjects["au"] == split.subjects["expr"] == list(split.videos)
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from pipeline.au_thresholds import AuThresholds, Strategy, fixed_thresholds, probabilities, search_thresholds
from pipeline.config import ConfigError
from pipeline.data.manifest import Manifest
from pipeline.labels import NUM_AUS, TASKS

SECTION = "selection"
CRITERION_FRAMES = "face_frames"   # the frame set every selection score is computed on
_SALT = 7013                       # keeps this draw apart from other uses of the same seed

Mode = Literal["holdout", "validation", "last"]


@dataclass(frozen=True)
class SelectionConfig:
    """The ``selection`` params section: how every trainer picks the epoch it publishes."""

    mode: Mode = "holdout"
    share: float = 0.2       # holdout: share of each task's Aff-Wild2 training videos held out
    seed: int = 0            # holdout: which videos
    au_thresholds: Strategy = "per_au"   # fixed (0.5) | global | per_au: chosen on the held-out face frames

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ConfigError(f"must be in (0, 1), got {self.share}", key="share")

    def resume_key(self) -> dict[str, Any]:
        """What of the section shapes training (the thresholds are chosen after it: changing them resumes)."""
        return {"mode": self.mode, "share": self.share, "seed": self.seed}


@dataclass(frozen=True)
class SelectionSplit:
    """The held-out videos and, per task, their subjects that the task would otherwise train on."""

    videos: tuple[str, ...] = ()
    subjects: dict[str, list[str]] = field(default_factory=lambda: {task: [] for task in TASKS})


def carve_selection(manifest: Manifest, share: float, seed: int) -> SelectionSplit:
    """Hold out about ``share`` of each task's Aff-Wild2 training videos (at least one each).

    Each task's quota is ``max(1, round(share * its training videos))``. Videos are visited in a
    seeded order of their sorted names (so the manifest's order does not matter), twice: the first
    pass takes a video only when every task it trains still lacks its quota, the second fills a
    quota still open with any video of that task. A taken video leaves the training of every task,
    so in the second pass a task may get more than its quota. Raises ``ValueError`` naming
    ``selection.share`` when a task would keep no training video.
    """
    records = [r for r in manifest.subjects if r.source == "affwild2"]
    videos = {task: {r.video for r in records if r.split(task) == "train"} for task in TASKS}
    pool = sorted(set().union(*videos.values()))
    quota = {task: max(1, round(share * len(videos[task]))) if videos[task] else 0 for task in TASKS}
    order = [pool[int(i)] for i in np.random.default_rng([seed, _SALT]).permutation(len(pool))]
    taken: list[str] = []
    for strict in (True, False):
        for video in order:
            trains = [task for task in TASKS if video in videos[task]]
            lacking = [task for task in trains if len(videos[task] & set(taken)) < quota[task]]
            if video not in taken and lacking and (len(lacking) == len(trains) or not strict):
                taken.append(video)
    for task in TASKS:
        if videos[task] and videos[task] <= set(taken):
            raise ValueError(
                f"{SECTION}.share {share} holds out every Aff-Wild2 training video of the {task} task "
                f"({', '.join(sorted(videos[task]))}); lower {SECTION}.share or set {SECTION}.mode to "
                f"validation or last")
    held = set(taken)
    subjects = {task: [r.name for r in records if r.split(task) == "train" and r.video in held] for task in TASKS}
    return SelectionSplit(tuple(sorted(taken)), subjects)


def selection_split(manifest: Manifest, cfg: SelectionConfig) -> SelectionSplit:
    """The held-out split of ``cfg`` (empty unless ``cfg.mode`` is ``holdout``)."""
    return carve_selection(manifest, cfg.share, cfg.seed) if cfg.mode == "holdout" else SelectionSplit()


def calibrate_au(cfg: SelectionConfig, au_logits: np.ndarray, au_labels: np.ndarray) -> AuThresholds:
    """The kept model's AU thresholds by ``cfg.au_thresholds``, chosen on its (N, 12) logits of the
    held-out ``face_frames`` against their labels (-1 unlabelled); 0.5 unless the mode is ``holdout``."""
    if cfg.au_thresholds == "fixed":
        return fixed_thresholds(f"{SECTION}.au_thresholds is fixed")
    if cfg.mode != "holdout":
        return fixed_thresholds(f"{SECTION}.mode {cfg.mode}: no held-out split to choose them on")
    labelled = int((np.asarray(au_labels) >= 0).any(axis=1).sum()) if len(au_labels) else 0
    return search_thresholds(probabilities(au_logits).reshape(-1, NUM_AUS), np.asarray(au_labels).reshape(-1, NUM_AUS),
                             cfg.au_thresholds, f"held-out selection split, {CRITERION_FRAMES}: {labelled} AU frames")


def held_out_au(
    logits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    labels: Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray]],
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(AU logits, AU labels), both (N, 12), of the face frames of the subjects ``names``, from their
    whole-subject ``(au, expr[, va])`` outputs; ``labels(name)`` gives ``(au, expr, face_present[, va])``."""
    au_logits, au_labels = [np.zeros((0, NUM_AUS), np.float32)], [np.zeros((0, NUM_AUS), np.int8)]
    for name in names:
        item = labels(name)   # (au, expr, face_present), and the VA labels after them where given
        au, face = item[0], item[2]
        au_logits.append(logits[name][0][face])
        au_labels.append(au[face])
    return np.concatenate(au_logits), np.concatenate(au_labels)


def criterion_score(scores: Mapping[str, Any]) -> float:
    """The selection score of a frame-set report (:func:`pipeline.train.loop.frame_set_metrics`)."""
    value = scores[CRITERION_FRAMES]["score"]
    if value is None:
        raise ValueError(f"no {CRITERION_FRAMES} to score for any task: cannot select an epoch")
    return float(value)


def epoch_score(mode: Mode, validation: Mapping[str, Any], selection: Mapping[str, Any] | None,
                criterion: Callable[[Mapping[str, Any]], float] = criterion_score) -> float | None:
    """An epoch's selection score: ``criterion`` of the held-out subjects' report, of the validation
    report, or ``None`` (``last``)."""
    if mode == "last":
        return None
    if mode == "holdout":
        if selection is None:
            raise ValueError("selection mode holdout needs the held-out subjects' scores")
        return criterion(selection)
    return criterion(validation)


def selection_report(
    cfg: SelectionConfig, split: SelectionSplit, history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The metrics file's ``selection`` entry: the mode, the held-out videos and subjects, and each
    epoch's selection score next to its validation score (both on ``face_frames``)."""
    holdout = cfg.mode == "holdout"
    return {
        "mode": cfg.mode,
        "frames": None if cfg.mode == "last" else CRITERION_FRAMES,
        "share": cfg.share if holdout else None,
        "seed": cfg.seed if holdout else None,
        "videos": list(split.videos),
        "subjects": {task: list(names) for task, names in split.subjects.items()},
        "per_epoch": [{"epoch": h["epoch"], "selection_score": h["score"],
                       "validation_score": h["metrics"][CRITERION_FRAMES]["score"]} for h in history],
    }
