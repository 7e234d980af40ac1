"""Per-epoch training curves, one row per epoch, for ``dvc plots``.

A trainer's history (:class:`pipeline.train.loop_state.EpochRecord` dicts) becomes rows of plain
numbers: the epoch, each task's mean training loss, the scores of the validation report (each task's
present in it, AU, EXPR and valence-arousal, and their mean; on the
frames with a face, the paper's scoring; for the face pretraining, the held-out verification
accuracy and TAR@FAR), the held-out videos' score where epochs are selected on them, and the
selection score. Column names hold no dots, which Vega-Lite (``dvc plots``) reads as nesting.

Example:
    >>> history = [{"epoch": 1, "score": 0.4, "loss": {"au": 0.7, "expr": 1.9},
    ...             "metrics": {"face_frames": {"au": {"f1": 0.3, "score": 0.5}, "score": 0.45},
    ...                         "all_frames": {"score": 0.3}},
    ...             "selection": {"face_frames": {"score": 0.4}}}]
    >>> curve_rows(history)
    [{'epoch': 1, 'loss_au': 0.7, 'loss_expr': 1.9, 'val_au_score': 0.5, 'val_score': 0.45, \
'holdout_score': 0.4, 'selection_score': 0.4}]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.fsio import atomic_path
from pipeline.labels import TASKS

FRAME_SET = "face_frames"   # the frame set the curves show: the one the paper scores (§4.4)
VERIFICATION = ("accuracy", "tar_at_far")   # a face-pretraining epoch's held-out verification figures


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _report_scores(prefix: str, report: Mapping[str, Any] | None) -> dict[str, float | None]:
    """``<prefix>_<task>_score`` and ``<prefix>_score`` of a frame-set report, or the verification
    figures (``<prefix>_accuracy``, ``<prefix>_tar_at_far``) of a pretraining epoch."""
    if not report:
        return {}
    if "verification" in report:
        return {f"{prefix}_{key}": _number(report["verification"].get(key)) for key in VERIFICATION}
    frames = report.get(FRAME_SET) or {}
    row = {f"{prefix}_{task}_score": _number(frames[task]["score"]) for task in TASKS if frames.get(task)}
    if "score" in frames:
        row[f"{prefix}_score"] = _number(frames["score"])
    return row


def curve_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float | None]]:
    """One row per epoch of ``history``: ``epoch``, ``loss_<task>``, the validation scores (``val_...``),
    the held-out videos' ``holdout_score`` (selection mode holdout) and ``selection_score`` (``None``
    where the last epoch is kept)."""
    rows = []
    for record in history:
        row: dict[str, float | None] = {"epoch": int(record["epoch"])}
        row.update({f"loss_{task}": _number(value) for task, value in (record.get("loss") or {}).items()})
        row.update(_report_scores("val", record.get("metrics")))
        selection = record.get("selection") or {}
        if (selection.get(FRAME_SET) or {}).get("score") is not None:
            row["holdout_score"] = _number(selection[FRAME_SET]["score"])
        row["selection_score"] = _number(record.get("score"))
        rows.append(row)
    return rows


def curves_csv(rows: Sequence[Mapping[str, float | None]]) -> str:
    """``rows`` as CSV text: the columns in first-seen order, an empty cell for a missing value."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["epoch"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_curves(path: str | Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write the curve rows of ``history`` to ``path`` as CSV, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(curves_csv(curve_rows(history)))
