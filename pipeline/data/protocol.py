"""The paper's leakage-free validation protocol (section 4.1), over the three annotated tasks.

Some Aff-Wild2 videos are in one task's validation set and another task's training set (AU, EXPR and
VA each have their own split). A subject's validation split for task T becomes ``"excluded"`` when
its video (the media file, shared by ``_left``/``_right`` faces) has a subject in the training set
of any other task, so no validation video of one task was seen in another task's training, and the
remaining validation videos of the tasks are consistent. (Within one task, the two faces of a video
may sit in different splits, as before: they are different people.) Only Aff-Wild2 subjects take
part; BP4D is training data. :func:`exclusions` says what was removed and why.

Example:
    >>> from pipeline.data.manifest import SubjectRecord
    >>> a = SubjectRecord("v1", "v1", au_split="validation", expr_split="train", n_au_labelled=5)
    >>> records, excluded = apply_protocol([a])
    >>> records[0].au_split, excluded
    ('excluded', {'au': 5, 'expr': 0, 'va': 0})
    >>> exclusions(records)
    [{'subject': 'v1', 'video': 'v1', 'task': 'au', 'frames': 5, 'trained_in': ['expr']}]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from pipeline.data.manifest import SubjectRecord
from pipeline.labels import ANNOTATED_TASKS


def labelled_frames(record: SubjectRecord, task: str) -> int:
    """Return the number of frames of ``record`` labelled for ``task`` (``"au"``, ``"expr"`` or ``"va"``)."""
    counts = {"au": record.n_au_labelled, "expr": record.n_expr_labelled, "va": record.n_va_labelled}
    if task not in counts:
        raise ValueError(f"task must be one of {ANNOTATED_TASKS}, got {task!r}")
    return counts[task]


def train_videos(records: Sequence[SubjectRecord], task: str) -> set[str]:
    """Return the Aff-Wild2 videos that have a subject in ``task``'s training set."""
    return {r.video for r in records if r.source == "affwild2" and r.split(task) == "train"}


def apply_protocol(records: Sequence[SubjectRecord]) -> tuple[list[SubjectRecord], dict[str, int]]:
    """Mark leaking validation subjects ``"excluded"``; return the records and excluded labelled frames per task."""
    trained = {task: train_videos(records, task) for task in ANNOTATED_TASKS}
    excluded = {task: 0 for task in ANNOTATED_TASKS}
    out: list[SubjectRecord] = []
    for record in records:
        changes: dict[str, str] = {}
        for task in ANNOTATED_TASKS:
            if (
                record.source == "affwild2"
                and record.split(task) == "validation"
                and any(record.video in trained[other] for other in ANNOTATED_TASKS if other != task)
            ):
                changes[f"{task}_split"] = "excluded"
                excluded[task] += labelled_frames(record, task)
        out.append(dataclasses.replace(record, **changes) if changes else record)
    return out, excluded


def exclusions(records: Sequence[SubjectRecord]) -> list[dict[str, Any]]:
    """One entry per (subject, task) the protocol excluded: video, labelled frames, the other tasks training on it.

    Read from the records after :func:`apply_protocol`, which never changes a training split, so the
    training sets that caused each exclusion are still there.
    """
    trained = {task: train_videos(records, task) for task in ANNOTATED_TASKS}
    out = []
    for record in records:
        for task in ANNOTATED_TASKS:
            if record.split(task) == "excluded":
                out.append({
                    "subject": record.name, "video": record.video, "task": task,
                    "frames": labelled_frames(record, task),
                    "trained_in": [t for t in ANNOTATED_TASKS if t != task and record.video in trained[t]],
                })
    return out
