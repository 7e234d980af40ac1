"""Which videos the dataset has: names, splits, frame rates, containers, audio, subjects.

The first ``N_REQUIRED_VIDEOS`` videos play fixed roles so every preset exercises every case the
readers and the validation protocol must handle. The rest are "ordinary": their shares of
validation, single-task, two-subject and .avi videos are exactly the configured fractions (rounded),
assigned in a seeded random order; frame rates and lengths are drawn.

    >>> plans = plan_videos(SynthConfig.from_preset("tiny"))
    >>> [p.role for p in plans][:3]
    ['both_train', 'both_validation', 'au_train_expr_validation']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.synth.config import N_REQUIRED_VIDEOS, SynthConfig

TRAIN, VALIDATION = "train", "validation"
SPLIT_DIRS = {TRAIN: "Train_Set", VALIDATION: "Validation_Set"}


@dataclass(frozen=True)
class SubjectPlan:
    """One annotated face: annotation stem and its split per task (None = not annotated)."""

    name: str
    au_split: str | None
    expr_split: str | None
    va_split: str | None = None


@dataclass(frozen=True)
class VideoPlan:
    """One video to generate."""

    index: int
    stem: str
    role: str
    fps: float
    n_frames: int
    container: str            # "mp4" or "avi"
    folder: str               # subfolder of videos/
    has_audio: bool
    sample_rate: int
    subjects: tuple[SubjectPlan, ...]
    extra_lines: int = 0      # annotation lines minus video frames

    @property
    def relpath(self) -> str:
        """Path of the video file under the dataset root."""
        return f"videos/{self.folder}/{self.stem}.{self.container}"


# role -> (fps, container, has_audio, subject splits as (suffix, au_split, expr_split), extra lines?)
_REQUIRED: tuple[tuple[str, float, str, bool, tuple[tuple[str, str | None, str | None], ...], bool], ...] = (
    ("both_train", 30.0, "mp4", True, (("", TRAIN, TRAIN),), False),
    ("both_validation", 25.0, "mp4", True, (("", VALIDATION, VALIDATION),), False),
    ("au_train_expr_validation", 29.97, "mp4", True, (("", TRAIN, VALIDATION),), False),
    ("au_only", 25.0, "avi", True, (("", VALIDATION, None),), False),
    ("expr_only", 30.0, "mp4", True, (("", None, TRAIN),), True),
    ("no_audio", 25.0, "mp4", False, (("", VALIDATION, VALIDATION),), False),
    ("two_subject", 25.0, "mp4", True, (("_left", TRAIN, TRAIN), ("_right", TRAIN, TRAIN)), False),
)
assert len(_REQUIRED) == N_REQUIRED_VIDEOS
# VA split of each required role. None of them moves an AU or EXPR split: VA validation only where
# no other task trains, except au_train_expr_validation, whose VA validation the protocol excludes
# (its video trains AU), so the VA exclusion is exercised too. au_only and expr_only have no VA.
_REQUIRED_VA: dict[str, str | None] = {
    "both_train": TRAIN, "both_validation": VALIDATION, "au_train_expr_validation": VALIDATION,
    "au_only": None, "expr_only": None, "no_audio": VALIDATION, "two_subject": TRAIN,
}


def plan_videos(cfg: SynthConfig) -> list[VideoPlan]:
    """All videos of the dataset, in generation order (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng([cfg.seed, 0])
    vc = cfg.video
    width, height = vc.frame_size
    traits = _ordinary_traits(rng, cfg.n_videos - N_REQUIRED_VIDEOS, cfg)
    plans = []
    for index in range(cfg.n_videos):
        rate = cfg.audio.sample_rates[index % len(cfg.audio.sample_rates)]
        if index < N_REQUIRED_VIDEOS:
            role, fps, container, audio, subjects, mismatch = _REQUIRED[index]
            duration = rng.uniform(*vc.required_duration_s)
            va_split = _REQUIRED_VA[role]
        else:
            role, mismatch, audio = "ordinary", False, True
            validation, single_task, two_subject, avi = traits[index - N_REQUIRED_VIDEOS]
            fps = float(vc.fps_choices[rng.integers(len(vc.fps_choices))])
            container = "avi" if avi else "mp4"
            duration = rng.uniform(*vc.duration_s)
            subjects = _ordinary_subjects(rng, validation, single_task, two_subject)
            va_split = VALIDATION if validation else TRAIN   # drawn from nothing: the plan's draws stay as they were
        n_frames = max(int(round(duration * fps)), 10)
        stem = f"{index + 1}-{int(round(fps))}-{width}x{height}" if index % 3 else f"video{index + 1}"
        plans.append(VideoPlan(
            index=index, stem=stem, role=role, fps=fps, n_frames=n_frames, container=container,
            folder="batch1" if index % 2 == 0 else "batch2", has_audio=audio, sample_rate=int(rate),
            subjects=tuple(SubjectPlan(stem + suffix, au, ex, va_split) for suffix, au, ex in subjects),
            extra_lines=vc.mismatch_lines if mismatch else 0,
        ))
    return plans


def _ordinary_traits(rng: np.random.Generator, n: int, cfg: SynthConfig) -> list[tuple[bool, bool, bool, bool]]:
    """(validation, single task, two subjects, avi) per ordinary video: exact shares, shuffled."""
    vc = cfg.video
    columns = []
    for share in (vc.validation_fraction, vc.single_task_fraction, vc.two_subject_fraction, vc.avi_fraction):
        k = int(round(share * n))
        column = np.zeros(n, dtype=bool)
        column[:k] = True
        columns.append(rng.permutation(column))
    return [tuple(bool(c[i]) for c in columns) for i in range(n)]  # type: ignore[misc]


def _ordinary_subjects(rng: np.random.Generator, validation: bool, single_task: bool,
                       two_subject: bool) -> tuple[tuple[str, str | None, str | None], ...]:
    split = VALIDATION if validation else TRAIN
    au_split, expr_split = split, split
    if single_task:
        if rng.random() < 0.5:
            au_split = None
        else:
            expr_split = None
    suffixes = ("_left", "_right") if two_subject else ("",)
    return tuple((suffix, au_split, expr_split) for suffix in suffixes)
