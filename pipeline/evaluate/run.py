"""Scoring of the three model variants on the leakage-free validation sets, with tables, plots and
ABAW submission files.

Variants (all per frame, every frame of a subject predicted):

- ``visual``: the fine-tuned visual model's logits cached in ``visual.zarr`` (frames without a face
  hold zero logits there, i.e. probability 0.5 for every AU and a uniform expression);
- ``fusion``: the A+V fusion head of ``train-audio`` on the cached visual and audio embeddings
  (zeros for a missing face or missing audio, as the stores hold them);
- ``sequence``: the sequence model over each whole subject, overlapping windows averaged
  (:class:`pipeline.inference.sequence.SequenceRunner`), from ``model.pt`` (torch) or
  ``sequence.onnx`` (onnxruntime), whichever path is given.

Scored frames: every labelled frame of the Aff-Wild2 subjects whose ``au_split`` (AU task) or
``expr_split`` (EXPR task) is ``"validation"`` in the manifest. An AU is active when its probability exceeds
``au_threshold``; the expression is the arg-max class.

Outputs::

    <metrics_path>                      {"visual": {"au": {"f1", "acc", "score"}, "expr": {...}}, ...}
    <out_dir>/tables/scores.{csv,md}     the metrics as a table (one row per variant)
    <out_dir>/tables/per_class_f1.{csv,md}  rows AUs then expressions (and each task's mean), columns variants
    <out_dir>/plots/confusion_<variant>.png, au_f1.png, expr_f1.png, timeline_<subject>.png
    <out_dir>/submission/<variant>/{AU_Set,EXPR_Set}/<subject>.txt   (every variant)

Example (not run here: it needs the pipeline's stores and models)::

    evaluate(read_manifest("cache/prepared/manifest.json"), "cache/embeddings/visual.zarr",
             "cache/embeddings/audio.zarr", "cache/audio/model.pt", "cache/sequence/model.pt",
             "cache/evaluation", "metrics/evaluate.json", EvaluateConfig())
    # {'visual': {'au': {'f1': ..., 'acc': ..., 'score': ...}, 'expr': {...}}, 'fusion': ..., 'sequence': ...}
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.config import ConfigError
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.device import resolve_device
from pipeline.evaluate import plots, submission
from pipeline.fsio import atomic_path, write_json
from pipeline.inference.loading import read_checkpoint
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS, TASKS, UNLABELLED
from pipeline.metrics import au_metrics, au_per_class_f1, expr_metrics, expr_per_class_f1
from pipeline.store import EmbeddingStore

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("visual", "fusion", "sequence")


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` params section."""

    au_threshold: float = 0.5                        # an AU is active when its probability exceeds this
    metric_variant: Literal["abaw2", "abaw3"] = "abaw2"  # ABAW2: 0.5 F1 + 0.5 acc (AU), 0.67 F1 + 0.33 acc (EXPR)
    timeline_videos: int = 3                         # validation subjects drawn for timeline plots
    timeline_variant: Literal["visual", "fusion", "sequence"] = "sequence"  # whose AUs the timelines show
    seed: int = 0                                    # draws the timeline subjects

    def __post_init__(self) -> None:
        if not 0.0 < self.au_threshold < 1.0:
            raise ConfigError(f"must be in (0, 1), got {self.au_threshold}", key="au_threshold")
        if self.timeline_videos < 0:
            raise ConfigError(f"must be >= 0, got {self.timeline_videos}", key="timeline_videos")


@dataclass
class SubjectResult:
    """Labels (validation tasks only, else -1) and each variant's predictions for one subject."""

    record: SubjectRecord
    au_true: np.ndarray                                   # (N, 12) int8
    expr_true: np.ndarray                                 # (N,) int8
    face_present: np.ndarray                              # (N,) bool
    au_pred: dict[str, np.ndarray] = field(default_factory=dict)    # variant -> (N, 12) int8
    expr_pred: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N,) int8


def evaluate(
    manifest: Manifest,
    visual_zarr: str | Path,
    audio_zarr: str | Path,
    audio_model_pt: str | Path,
    sequence_model_pt: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    cfg: EvaluateConfig,
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, dict[str, dict[str, float]]]:
    """Score every variant on the validation subjects and write metrics, tables, plots and submissions.

    ``out_dir`` is replaced as a whole once everything in it is written; the metrics JSON follows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    subjects = validation_subjects(manifest)
    if not subjects:
        raise ValueError("the manifest has no validation subjects for either task; nothing to evaluate")
    torch_device = resolve_device(device)
    fusion = load_fusion(audio_model_pt, torch_device)
    sequence = load_sequence_runner(sequence_model_pt, device)
    visual_store = EmbeddingStore.open_read(visual_zarr)
    audio_store = EmbeddingStore.open_read(audio_zarr)
    results = []
    for record in subjects:
        log.info("evaluating %s (%d frames)", record.name, record.n_frames)
        results.append(
            predict_subject(record, visual_store, audio_store, fusion, sequence, cfg, torch_device, batch_size)
        )
    metrics, per_class = score(results, cfg.metric_variant)
    with atomic_path(out_dir) as tmp:
        write_tables(tmp / "tables", metrics, per_class)
        write_plots(tmp / "plots", results, per_class, cfg)
        write_submissions(tmp / "submission", results)
    write_json(metrics_path, metrics)
    return metrics


def validation_subjects(manifest: Manifest) -> list[SubjectRecord]:
    """Aff-Wild2 subjects in the validation split of the AU or the EXPR task, in manifest order."""
    chosen = {r.name for task in TASKS for r in manifest.in_split(task, "validation", sources=("affwild2",))}
    return [r for r in manifest.subjects if r.name in chosen]


def load_fusion(path: str | Path, device: torch.device) -> torch.nn.Module:
    """The A+V fusion head of a ``train-audio`` checkpoint, in eval mode on ``device``."""
    from pipeline.models.fusion import load_fusion_head

    ckpt = read_checkpoint(path, "audio model", "train-audio")
    return load_fusion_head(ckpt).to(device).eval()


def predict_subject(
    record: SubjectRecord,
    visual_store: EmbeddingStore,
    audio_store: EmbeddingStore,
    fusion: torch.nn.Module,
    sequence: SequenceRunner,
    cfg: EvaluateConfig,
    device: torch.device,
    batch_size: int = 256,
) -> SubjectResult:
    """Every variant's per-frame predictions for one subject, with its validation labels."""
    visual = _read_entry(visual_store, record.name, "embed-visual")
    audio = _read_entry(audio_store, record.video, "embed-audio")
    n = len(visual["expr"])
    for where, arrays in (("visual", visual), ("audio", audio)):
        lengths = {name: len(value) for name, value in arrays.items()}
        if set(lengths.values()) != {record.n_frames}:
            raise ValueError(
                f"{record.name}: {where} store arrays have {lengths} frames, the manifest says {record.n_frames}"
            )
    logits = {
        "visual": (visual["au_logits"], visual["expr_logits"]),
        "fusion": _fusion_logits(fusion, visual["embedding"], audio["embedding"], device, batch_size),
    }
    logits["sequence"] = sequence.video_logits(
        visual["embedding"], audio["embedding"], visual["face_present"], audio["audio_present"]
    )
    au_true = visual["au"] if record.au_split == "validation" else np.full((n, NUM_AUS), UNLABELLED, np.int8)
    expr_true = visual["expr"] if record.expr_split == "validation" else np.full(n, UNLABELLED, np.int8)
    result = SubjectResult(record, au_true.astype(np.int8), expr_true.astype(np.int8),
                           np.asarray(visual["face_present"], bool))
    for variant, (au, expr) in logits.items():
        result.au_pred[variant], result.expr_pred[variant] = decide(au, expr, cfg.au_threshold)
    return result


def decide(au_logits: np.ndarray, expr_logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary AUs (sigmoid above ``threshold``) and arg-max expressions from logits, as int8."""
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(x) > t  <=>  x > logit(t)
    au = (np.asarray(au_logits, dtype=np.float32) > cut).astype(np.int8)
    expr = np.asarray(expr_logits, dtype=np.float32).argmax(axis=-1).astype(np.int8)
    return au, expr


def score(
    results: list[SubjectResult], metric_variant: str
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, np.ndarray]]]:
    """ABAW metrics and per-class F1 of every variant over the validation frames of ``results``."""
    au_subjects = [r for r in results if r.record.au_split == "validation"]
    expr_subjects = [r for r in results if r.record.expr_split == "validation"]
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    per_class: dict[str, dict[str, np.ndarray]] = {"au": {}, "expr": {}}
    for variant in VARIANTS:
        metrics[variant] = {}
        if au_subjects:
            au_true = np.concatenate([r.au_true for r in au_subjects])
            au_pred = np.concatenate([r.au_pred[variant] for r in au_subjects])
            metrics[variant]["au"] = au_metrics(au_true, au_pred, metric_variant)
            per_class["au"][variant] = au_per_class_f1(au_true, au_pred)
        if expr_subjects:
            expr_true = np.concatenate([r.expr_true for r in expr_subjects])
            expr_pred = np.concatenate([r.expr_pred[variant] for r in expr_subjects])
            metrics[variant]["expr"] = expr_metrics(expr_true, expr_pred, metric_variant)
            per_class["expr"][variant] = expr_per_class_f1(expr_true, expr_pred)
    return metrics, per_class


def per_class_rows(per_class: dict[str, dict[str, np.ndarray]]) -> list[list[str]]:
    """Rows ``[task, class, <variant F1>...]``: each AU, the AU mean, each expression, the EXPR mean."""
    rows = []
    for task, names in (("au", AU_NAMES), ("expr", EXPR_NAMES)):
        table = per_class.get(task)
        if not table:
            continue
        for i, name in enumerate(names):
            rows.append([task, name, *(f"{table[v][i]:.4f}" for v in VARIANTS)])
        rows.append([task, "mean", *(f"{table[v].mean():.4f}" for v in VARIANTS)])
    return rows


def score_rows(metrics: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per variant of the metrics: AU f1/acc/score then EXPR f1/acc/score."""
    header = ["variant"] + [f"{task}_{key}" for task in TASKS for key in ("f1", "acc", "score")]
    rows = []
    for variant in VARIANTS:
        row = [variant]
        for task in TASKS:
            values = metrics[variant].get(task)
            row += [f"{values[key]:.4f}" if values else "" for key in ("f1", "acc", "score")]
        rows.append(row)
    return header, rows


def write_tables(folder: Path, metrics: dict[str, Any], per_class: dict[str, dict[str, np.ndarray]]) -> None:
    """Write ``scores`` and ``per_class_f1`` as CSV and Markdown into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "scores": score_rows(metrics),
        "per_class_f1": (["task", "class", *VARIANTS], per_class_rows(per_class)),
    }
    for name, (header, rows) in tables.items():
        (folder / f"{name}.csv").write_text(_csv_text(header, rows))
        (folder / f"{name}.md").write_text(_markdown(header, rows))


def write_plots(folder: Path, results: list[SubjectResult], per_class: dict[str, dict[str, np.ndarray]],
                cfg: EvaluateConfig) -> None:
    """Confusion matrix per variant, per-AU and per-expression F1 bars, timelines of a few subjects."""
    folder.mkdir(parents=True, exist_ok=True)
    expr_subjects = [r for r in results if r.record.expr_split == "validation"]
    if expr_subjects:
        expr_true = np.concatenate([r.expr_true for r in expr_subjects])
        for variant in VARIANTS:
            expr_pred = np.concatenate([r.expr_pred[variant] for r in expr_subjects])
            plots.plot_confusion(expr_true, expr_pred, folder / f"confusion_{variant}.png", variant)
        plots.plot_f1_bars(per_class["expr"], EXPR_NAMES, folder / "expr_f1.png",
                           "Per-expression F1 on the validation set")
    if per_class["au"]:
        plots.plot_au_f1(per_class["au"], folder / "au_f1.png")
    for result in timeline_subjects(results, cfg.timeline_videos, cfg.seed):
        v = cfg.timeline_variant
        plots.plot_timeline(
            result.record.name, result.au_true, result.au_pred[v], result.expr_true, result.expr_pred,
            folder / f"timeline_{result.record.name}.png", fps=result.record.fps, au_variant=v,
            face_present=result.face_present,
        )


def timeline_subjects(results: list[SubjectResult], count: int, seed: int) -> list[SubjectResult]:
    """``count`` subjects drawn with ``seed`` (all when fewer), in name order."""
    ordered = sorted(results, key=lambda r: r.record.name)
    if count >= len(ordered):
        return ordered
    picks = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(picks)]


def write_submissions(folder: Path, results: list[SubjectResult]) -> None:
    """ABAW submission files of every variant: AU_Set for AU validation subjects, EXPR_Set for EXPR."""
    for variant in VARIANTS:
        au = {r.record.name: r.au_pred[variant] for r in results if r.record.au_split == "validation"}
        expr = {r.record.name: r.expr_pred[variant] for r in results if r.record.expr_split == "validation"}
        if au:
            submission.write_submission(folder, variant, "au", au)
        if expr:
            submission.write_submission(folder, variant, "expr", expr)


def _fusion_logits(
    fusion: torch.nn.Module, visual: np.ndarray, audio: np.ndarray, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    au_parts, expr_parts = [], []
    with torch.inference_mode():
        for start in range(0, len(visual), batch_size):
            v = torch.from_numpy(np.asarray(visual[start:start + batch_size], dtype=np.float32)).to(device)
            a = torch.from_numpy(np.asarray(audio[start:start + batch_size], dtype=np.float32)).to(device)
            au, expr = fusion(v, a)
            au_parts.append(au.float().cpu().numpy())
            expr_parts.append(expr.float().cpu().numpy())
    return np.concatenate(au_parts), np.concatenate(expr_parts)


def _read_entry(store: EmbeddingStore, key: str, stage: str) -> dict[str, np.ndarray]:
    if not store.is_complete(key):
        raise ValueError(f"{store.path}: no complete entry for {key!r} (re-run {stage})")
    return store.read(key)


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
