"""Which subjects train, select and validate each task, read from the manifest's splits."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.data.manifest import Manifest
from pipeline.labels import TASKS
from pipeline.train.selection import SelectionSplit


@dataclass(frozen=True)
class Splits:
    """Subject names per task and split; ``selection`` holds the training subjects held out to pick
    the kept epoch (:mod:`pipeline.train.selection`), empty unless the selection mode is holdout."""

    train: dict[str, list[str]]
    validation: dict[str, list[str]]
    selection: dict[str, list[str]] = field(default_factory=lambda: {task: [] for task in TASKS})

    def all_subjects(self) -> list[str]:
        """Every subject used, in first-seen order."""
        names = [n for split in (self.train, self.validation, self.selection) for task in TASKS for n in split[task]]
        return list(dict.fromkeys(names))

    def validation_subjects(self) -> list[str]:
        """The subjects that validate any task, in first-seen order (AU, EXPR, then VA)."""
        return list(dict.fromkeys(n for task in TASKS for n in self.validation[task]))

    def selection_subjects(self) -> list[str]:
        """The held-out subjects of any task, in first-seen order (AU, EXPR, then VA)."""
        return list(dict.fromkeys(n for task in TASKS for n in self.selection[task]))


def task_splits(manifest: Manifest, sources: tuple[str, ...], held: SelectionSplit | None = None) -> Splits:
    """Train, validation and (with ``held``) selection subjects of each task from the manifest."""
    held = held or SelectionSplit()

    def names(task: str, split: str) -> list[str]:
        return [r.name for r in manifest.in_split(task, split, sources=sources)]

    selection = {task: [n for n in names(task, "train") if n in held.subjects[task]] for task in TASKS}
    splits = Splits(
        train={task: [n for n in names(task, "train") if n not in selection[task]] for task in TASKS},
        validation={task: names(task, "validation") for task in TASKS},
        selection=selection,
    )
    if not any(splits.train.values()):
        raise ValueError(f"the manifest has no training subjects from sources {list(sources)}")
    return splits
