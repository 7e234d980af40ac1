"""The paper's leakage-free validation protocol (section 4.1).

Some Aff-Wild2 videos are in the AU validation set and in the expression training set (and the
reverse). A subject's validation split for task T becomes ``"excluded"`` when its video (the media
file, shared by ``_left``/``_right`` faces) is in the training set of the other task, so neither
validation set carries prior knowledge from the other task's training, and the remaining validation
videos of the two tasks are consistent. Only Aff-Wild2 subjects take part; BP4D is training data.

Example:
    >>> from pipeline.data.manifest import SubjectRecord
    >>> a = SubjectRecord("v1", "v1", au_split="validation", expr_split="train", n_au_labelled=5)
    >>> records, excluded = apply_protocol([a])
    >>> records[0].au_split, excluded
    ('excluded', {'au': 5, 'expr': 0})
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from pipeline.data.manifest import SubjectRecord
from pipeline.labels import TASKS

_OTHER: dict[str, str] = {"au": "expr", "expr": "au"}


def labelled_frames(record: SubjectRecord, task: str) -> int:
    """Return the number of frames of ``record`` labelled for ``task``."""
    return record.n_au_labelled if task == "au" else record.n_expr_labelled


def train_videos(records: Sequence[SubjectRecord], task: str) -> set[str]:
    """Return the Aff-Wild2 videos that have a subject in ``task``'s training set."""
    return {r.video for r in records if r.source == "affwild2" and r.split(task) == "train"}


def apply_protocol(records: Sequence[SubjectRecord]) -> tuple[list[SubjectRecord], dict[str, int]]:
    """Mark leaking validation subjects ``"excluded"``; return the records and excluded labelled frames per task."""
    trained = {task: train_videos(records, task) for task in TASKS}
    excluded = {task: 0 for task in TASKS}
    out: list[SubjectRecord] = []
    for record in records:
        changes: dict[str, str] = {}
        for task in TASKS:
            if (
                record.source == "affwild2"
                and record.split(task) == "validation"
                and record.video in trained[_OTHER[task]]
            ):
                changes[f"{task}_split"] = "excluded"
                excluded[task] += labelled_frames(record, task)
        out.append(dataclasses.replace(record, **changes) if changes else record)
    return out, excluded
