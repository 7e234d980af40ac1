"""Which subjects train and which validate each task, read from the manifest's splits."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.data.manifest import Manifest
from pipeline.labels import TASKS


@dataclass(frozen=True)
class Splits:
    """Subject names per task and split."""

    train: dict[str, list[str]]
    validation: dict[str, list[str]]

    def all_subjects(self) -> list[str]:
        """Every subject used, in first-seen order."""
        names = [n for split in (self.train, self.validation) for task in TASKS for n in split[task]]
        return list(dict.fromkeys(names))

    def validation_subjects(self) -> list[str]:
        """The subjects that validate either task, in first-seen order (AU first)."""
        return list(dict.fromkeys(self.validation["au"] + self.validation["expr"]))


def task_splits(manifest: Manifest, sources: tuple[str, ...]) -> Splits:
    """Train and validation subjects of each task from the manifest."""
    def names(task: str, split: str) -> list[str]:
        return [r.name for r in manifest.in_split(task, split, sources=sources)]

    splits = Splits(
        train={task: names(task, "train") for task in TASKS},
        validation={task: names(task, "validation") for task in TASKS},
    )
    if not any(splits.train.values()):
        raise ValueError(f"the manifest has no training subjects from sources {list(sources)}")
    return splits
