"""Scoring of the three model variants on the leakage-free validation sets, with tables, plots and
ABAW submission files.

Variants (all per frame, every frame of a subject predicted):

- ``visual``: the fine-tuned visual model's logits cached in ``visual.zarr``. The visual model sees
  face crops only; on a frame without a face it has no output (the store holds zero logits there),
  and this variant predicts the fixed fallback ``no AU active, Neutral`` there, whatever
  ``au_threshold`` is;
- ``fusion``: the A+V fusion head of ``train-audio`` on the cached visual and audio embeddings
  (zeros for a missing face or missing audio, as the stores hold them);
- ``sequence``: the sequence model over each whole subject, overlapping windows averaged
  (:class:`pipeline.inference.sequence.SequenceRunner`), from ``model.pt`` (torch) or
  ``sequence.onnx`` (onnxruntime), whichever path is given.

Scored frames: the labelled frames of the Aff-Wild2 subjects whose ``au_split`` (AU task),
``expr_split`` (EXPR task) or ``va_split`` (valence-arousal, VA) is ``"validation"`` in the manifest,
each task on its own subjects, in two sets:

- ``face_frames``: those with a face crop, the frames the paper scores (§4.4 discards labelled
  frames without a cropped image); the headline;
- ``all_frames``: every labelled frame, also those without a face, which the fusion head and the
  sequence model predict from the audio and the context (our addition).

The trivial ``baseline`` (no AU active; always the most frequent expression of the training frames
of the same set; always the mean valence and arousal of the VA training frames of the same set) is
scored on the same frames as the variants of each set. VA is scored by :func:`pipeline.metrics.va_metrics`
(CCC per dimension, ``score`` their mean); a constant prediction has CCC 0, so the baseline's VA score
is 0 by construction: the number a model has to beat. A manifest without VA validation subjects (an
Aff-Wild2 copy without ``VA_Set``) is scored as before, without any ``va`` entry. An AU is active when its
probability exceeds ``au_threshold`` (0.5, the paper's); the expression is the arg-max class; the
EXPR macro F1 averages over the class set ``expr_f1_classes`` (see :mod:`pipeline.metrics`).

Each variant's AUs are also scored at the thresholds its model carries (:mod:`pipeline.au_thresholds`,
chosen on the held-out selection split by its trainer; 0.5 for a model without them): the visual
model's as ``embed-visual`` recorded them with its store (the ``model`` metadata of the
``visual.onnx`` it ran), the fusion head's from ``model.pt`` of ``train-audio``, the sequence
model's from its file. These scores sit apart, under ``calibrated``; every other number is the
fixed threshold's.

Outputs::

    <metrics_path>   {"face_frames": {"frames": {"au", "expr", "va"}, "visual": {"au": {"f1", "acc", "score"},
                      "expr": {...}, "va": {"ccc_valence", "ccc_arousal", "score"}}, "fusion", "sequence",
                      "baseline"}, "all_frames": {...},
                      "visual": <face_frames.visual>, "fusion": ..., "sequence": ..., "baseline": ...,
                      "calibrated": {"face_frames": {<variant>: {"au": {f1, acc, score}}}, "all_frames": ...,
                                     "thresholds": {<variant>: <its au_thresholds record>}}}
    <out_dir>/tables/scores.{csv,md}     the metrics as a table (one row per frame set and variant)
    <out_dir>/tables/per_class_f1.{csv,md}  rows AUs then expressions (and each task's macro F1),
                                            columns <frame set>.<variant>
    <out_dir>/plots/confusion_<variant>.png, au_f1.png, expr_f1.png   (face frames)
    <out_dir>/plots/timeline_<subject>.png, va_timeline_<subject>.png (VA validation subjects)
    <out_dir>/plots/va_density.png   valence-arousal density of the labels and the sequence model (face frames)
    <out_dir>/plot_data/confusion_<variant>.csv   actual,predicted expression of every face frame (DVC's
                                                  confusion template); au_f1_<variant>.csv: au,f1 (bars)
    <out_dir>/submission/<variant>/{AU_Set,EXPR_Set,VA_Set}/<subject>.txt   (every variant)

Example (not run here: it needs the pipeline's stores and models)::

    evaluate(read_manifest("cache/prepared/manifest.json"), "cache/embeddings/visual.zarr",
             "cache/embeddings/audio.zarr", "cache/audio/model.pt", "cache/sequence/model.pt",
             "cache/evaluation", "metrics/evaluate.json", EvaluateConfig())
    # {'face_frames': {...}, 'all_frames': {...}, 'visual': {'au': {'f1': ..., 'acc': ..., 'score': ...},
    #  'expr': {...}}, 'fusion': ..., 'sequence': ..., 'baseline': ...}
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch

from pipeline.au_thresholds import AuThresholds, thresholds_of
from pipeline.config import ConfigError
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.device import resolve_device
from pipeline.evaluate import plots, submission
from pipeline.fsio import atomic_path, write_json
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.model_files.loading import model_thresholds
from pipeline.labels import (
    AU_NAMES, CLASSIFICATION_TASKS, EXPR_NAMES, NUM_AUS, NUM_EXPRS, NUM_VA, TASKS, UNLABELLED, VA_NAMES, VA_RANGE,
)
from pipeline.metrics import au_metrics, au_per_class_f1, expr_metrics, expr_per_class_f1, va_metrics
from pipeline.storage.embedding_store import EmbeddingStore

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("visual", "fusion", "sequence")
BASELINE = "baseline"
FRAME_SETS: tuple[str, ...] = ("face_frames", "all_frames")
HEADLINE = "face_frames"       # the frame set whose scores also sit at the top of the metrics JSON
CALIBRATED = "calibrated"      # the metrics' entry of the AU scores at each model's own thresholds
FACELESS_EXPR = 0              # Neutral: the visual variant's expression on frames without a face
FACELESS_VA = 0.0              # the centre: the visual variant's valence and arousal on frames without a face
VA_KEYS: tuple[str, ...] = ("ccc_valence", "ccc_arousal", "score")  # a variant's ``va`` entry


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` params section."""

    au_threshold: float = 0.5                        # an AU is active when its probability exceeds this
    metric_variant: Literal["abaw2", "abaw3"] = "abaw2"  # ABAW2: 0.5 F1 + 0.5 acc (AU), 0.67 F1 + 0.33 acc (EXPR)
    timeline_videos: int = 3                         # validation subjects drawn for timeline plots
    timeline_variant: Literal["visual", "fusion", "sequence"] = "sequence"  # whose AUs the timelines show
    seed: int = 0                                    # draws the timeline subjects
    expr_f1_classes: Literal["all", "present"] = "all"  # EXPR macro F1 over the 7 classes or those present

    def __post_init__(self) -> None:
        if not 0.0 < self.au_threshold < 1.0:
            raise ConfigError(f"must be in (0, 1), got {self.au_threshold}", key="au_threshold")
        if self.timeline_videos < 0:
            raise ConfigError(f"must be >= 0, got {self.timeline_videos}", key="timeline_videos")


@dataclass
class SubjectResult:
    """Labels (validation tasks only, else -1, NaN for VA) and each variant's predictions for one subject."""

    record: SubjectRecord
    au_true: np.ndarray                                   # (N, 12) int8
    expr_true: np.ndarray                                 # (N,) int8
    face_present: np.ndarray                              # (N,) bool
    au_pred: dict[str, np.ndarray] = field(default_factory=dict)    # variant -> (N, 12) int8
    expr_pred: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N,) int8
    au_calibrated: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N, 12) int8, own thresholds
    va_true: np.ndarray | None = None                     # (N, 2) float32, NaN unlabelled; None: not VA validation
    va_pred: dict[str, np.ndarray] = field(default_factory=dict)    # variant -> (N, 2) float32 (VA validation only)


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
) -> dict[str, Any]:
    """Score every variant and the baseline on the validation subjects' face frames and all frames, and
    write metrics, tables, plots and submissions.

    ``out_dir`` is replaced as a whole once everything in it is written; the metrics JSON follows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    subjects = validation_subjects(manifest)
    if not subjects:
        raise ValueError("the manifest has no validation subjects for any task; nothing to evaluate")
    torch_device = resolve_device(device)
    fusion = load_fusion(audio_model_pt, torch_device)
    sequence = load_sequence_runner(sequence_model_pt, device)
    visual_store = EmbeddingStore.open_read(visual_zarr)
    audio_store = EmbeddingStore.open_read(audio_zarr)
    thresholds = {"visual": thresholds_of(visual_store.attrs.get("model"), f"{visual_zarr}'s visual model"),
                  "fusion": model_thresholds(audio_model_pt, "audio model", "train-audio"),
                  "sequence": sequence.au_thresholds}
    for variant, found in thresholds.items():
        log.info("%s AU thresholds: %s", variant, found.describe())
    majority = training_majority(manifest, visual_store)
    va_mean = training_va_mean(manifest, visual_store)
    if not any(r.split("va") == "validation" for r in subjects):
        log.info("no subject in the VA validation split: valence-arousal is not scored")
    results = []
    for record in subjects:
        log.info("evaluating %s (%d frames)", record.name, record.n_frames)
        results.append(predict_subject(record, visual_store, audio_store, fusion, sequence, cfg, torch_device,
                                       batch_size, thresholds))
    by_frames, per_class = score(results, cfg.metric_variant, cfg.expr_f1_classes, majority, va_mean)
    calibrated = calibrated_scores(results, cfg.metric_variant, thresholds)
    with atomic_path(out_dir) as tmp:
        write_tables(tmp / "tables", by_frames, per_class, calibrated)
        write_plots(tmp / "plots", results, per_class[HEADLINE], cfg)
        write_plot_data(tmp / "plot_data", results, per_class[HEADLINE])
        write_submissions(tmp / "submission", results)
    metrics = metrics_document(by_frames, calibrated)
    write_json(metrics_path, metrics)
    return metrics


def metrics_document(by_frames: dict[str, dict[str, Any]],
                     calibrated: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics JSON: both frame sets under their names, and the headline set's scores of every
    variant and the baseline repeated at the top (``<variant>.<task>.<f1|acc|score>``, what
    ``dvc exp show`` and ``mmaffect ablate --variant sequence`` read); the AU scores at each model's
    own thresholds (:func:`calibrated_scores`) under ``calibrated``."""
    headline = by_frames[HEADLINE]
    document = {**by_frames, **{name: headline[name] for name in (*VARIANTS, BASELINE)}}
    if calibrated is not None:
        document[CALIBRATED] = calibrated
    return document


def headline_scores(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Each variant's AU, EXPR and VA score on the headline frame set (``<variant>.<task>.score``; no
    ``va`` where VA was not scored): the few numbers ``dvc exp show`` lists for a run, read from
    :func:`metrics_document`'s top level; and, under ``calibrated``, each variant's AU score there at
    its model's own thresholds."""
    scores: dict[str, Any] = {variant: {task: {"score": metrics[variant][task]["score"]} for task in TASKS
                                        if task in metrics[variant]} for variant in VARIANTS}
    if CALIBRATED in metrics:
        scores[CALIBRATED] = {variant: {"au": {"score": au["au"]["score"]}}
                              for variant, au in metrics[CALIBRATED][HEADLINE].items()}
    return scores


def calibrated_scores(results: list[SubjectResult], metric_variant: str,
                      thresholds: Mapping[str, AuThresholds]) -> dict[str, Any]:
    """Each variant's AU metrics per frame set at its model's own thresholds (``au_calibrated``), and
    the thresholds used: ``{frames: {variant: {"au": {f1, acc, score}}}, "thresholds": {variant: record}}``
    (empty frame sets when no subject is in the AU validation split)."""
    own = [dataclasses.replace(r, au_pred=r.au_calibrated) for r in results]
    by_frames, _ = score(own, metric_variant)
    document: dict[str, Any] = {
        frames: {variant: {"au": by_frames[frames][variant]["au"]} for variant in VARIANTS
                 if "au" in by_frames[frames][variant]} for frames in FRAME_SETS}
    document["thresholds"] = {variant: thresholds[variant].record() for variant in VARIANTS}
    return document


def training_majority(manifest: Manifest, visual_store: EmbeddingStore) -> dict[str, int]:
    """The most frequent labelled expression of the Aff-Wild2 EXPR training subjects, per frame set.

    ``face_frames`` counts the training frames with a face, ``all_frames`` every labelled one: each
    baseline guesses the class it would have learnt from the frames of its own set. Neutral (0) when
    there are none; ties go to the lower class index.
    """
    counts = {name: np.zeros(NUM_EXPRS, np.int64) for name in FRAME_SETS}
    for record in manifest.in_split("expr", "train"):
        arrays = _read_entry(visual_store, record.name, "embed-visual", ("expr", "face_present"))
        expr = np.asarray(arrays["expr"], np.int64)
        face = np.asarray(arrays["face_present"], bool)
        labelled = expr >= 0
        counts["all_frames"] += np.bincount(expr[labelled], minlength=NUM_EXPRS)[:NUM_EXPRS]
        counts["face_frames"] += np.bincount(expr[labelled & face], minlength=NUM_EXPRS)[:NUM_EXPRS]
    return {name: int(count.argmax()) for name, count in counts.items()}


def training_va_mean(manifest: Manifest, visual_store: EmbeddingStore) -> dict[str, list[float]]:
    """The mean valence and arousal of the Aff-Wild2 VA training subjects' labelled frames, per frame set.

    Read from the labels the visual store holds (``va``, copied from ``labels.h5``), as
    :func:`training_majority` reads the expressions: ``face_frames`` averages the training frames
    with a face, ``all_frames`` every labelled one. 0 (the centre of the scale) for a dimension
    without any such frame.
    """
    sums = {name: np.zeros(NUM_VA, np.float64) for name in FRAME_SETS}
    counts = {name: np.zeros(NUM_VA, np.int64) for name in FRAME_SETS}
    for record in manifest.in_split("va", "train"):
        arrays = _read_entry(visual_store, record.name, "embed-visual", ("va", "face_present"))
        va = np.asarray(arrays["va"], np.float64)
        face = np.asarray(arrays["face_present"], bool)
        for name in FRAME_SETS:
            chosen = va[face] if name == "face_frames" else va
            labelled = ~np.isnan(chosen)
            sums[name] += np.where(labelled, chosen, 0.0).sum(axis=0)
            counts[name] += labelled.sum(axis=0)
    return {name: [float(s / c) if c else FACELESS_VA for s, c in zip(sums[name], counts[name])]
            for name in FRAME_SETS}


def validation_subjects(manifest: Manifest) -> list[SubjectRecord]:
    """Aff-Wild2 subjects in the validation split of the AU, EXPR or VA task, in manifest order."""
    chosen = {r.name for task in TASKS for r in manifest.in_split(task, "validation", sources=("affwild2",))}
    return [r for r in manifest.subjects if r.name in chosen]


def load_fusion(path: str | Path, device: torch.device) -> torch.nn.Module:
    """The A+V fusion head of a ``train-audio`` checkpoint, in eval mode on ``device``."""
    from pipeline.model_files.audio import load_fusion_head, read_model

    return load_fusion_head(read_model(path)).to(device).eval()


def predict_subject(
    record: SubjectRecord,
    visual_store: EmbeddingStore,
    audio_store: EmbeddingStore,
    fusion: torch.nn.Module,
    sequence: SequenceRunner,
    cfg: EvaluateConfig,
    device: torch.device,
    batch_size: int = 256,
    thresholds: Mapping[str, AuThresholds] | None = None,
) -> SubjectResult:
    """Every variant's per-frame predictions for one subject, with its validation labels; AUs at
    ``cfg.au_threshold`` and (``au_calibrated``) at each variant's ``thresholds`` (0.5 when not given);
    valence and arousal (``va_true``, ``va_pred``) when the subject is in the VA validation split."""
    visual = _read_entry(visual_store, record.name, "embed-visual")
    va_validation = record.split("va") == "validation"
    if va_validation:
        for name in ("va", "va_pred"):
            if name not in visual:
                raise ValueError(f"{visual_store.path}: {record.name!r} has no {name!r} array, but the manifest puts "
                                 "it in the VA validation split (a store from before VA; re-run embed-visual)")
    audio = _read_entry(audio_store, record.video, "embed-audio")
    n = len(visual["expr"])
    for where, arrays in (("visual", visual), ("audio", audio)):
        lengths = {name: len(value) for name, value in arrays.items()}
        if set(lengths.values()) != {record.n_frames}:
            raise ValueError(
                f"{record.name}: {where} store arrays have {lengths} frames, the manifest says {record.n_frames}"
            )
    # per variant: (AU logits, EXPR logits, VA predictions); the visual store's va_pred is absent in a
    # store from before VA, which only matters for a VA validation subject (checked above)
    logits = {
        "visual": (visual["au_logits"], visual["expr_logits"], visual.get("va_pred")),
        "fusion": _fusion_outputs(fusion, visual["embedding"], audio["embedding"], device, batch_size),
    }
    logits["sequence"] = sequence.video_logits(
        visual["embedding"], audio["embedding"], visual["face_present"], audio["audio_present"], batch_size
    )
    au_true = visual["au"] if record.au_split == "validation" else np.full((n, NUM_AUS), UNLABELLED, np.int8)
    expr_true = visual["expr"] if record.expr_split == "validation" else np.full(n, UNLABELLED, np.int8)
    result = SubjectResult(record, au_true.astype(np.int8), expr_true.astype(np.int8),
                           np.asarray(visual["face_present"], bool))
    if va_validation:
        result.va_true = _checked_va(np.asarray(visual["va"], np.float32), f"{visual_store.path}: {record.name!r}",
                                     "label", labels=True)
    for variant, (au, expr, va) in logits.items():
        result.au_pred[variant], result.expr_pred[variant] = decide(au, expr, cfg.au_threshold)
        if va_validation:
            where = f"{visual_store.path}: {record.name!r}" if variant == "visual" else f"{record.name!r}"
            result.va_pred[variant] = _checked_va(np.asarray(va, np.float32).copy(), where, f"{variant} prediction")
        own = (thresholds or {}).get(variant)
        result.au_calibrated[variant] = (own.decide(au) if own is not None
                                         else decide(au, expr, 0.5)[0])
    # The visual model never saw these frames: its zero logits there would turn into "every AU active"
    # for a threshold below 0.5, so the fallback is set here, explicitly and threshold-free.
    faceless = ~result.face_present
    result.au_pred["visual"][faceless] = 0
    result.au_calibrated["visual"][faceless] = 0
    result.expr_pred["visual"][faceless] = FACELESS_EXPR
    if va_validation:
        result.va_pred["visual"][faceless] = FACELESS_VA
    return result


# How far a prediction may pass [-1, 1] and still be a tanh output: onnxruntime's tanh can round a
# saturated value to 1 + 1 ulp (float32); such a value is clipped, anything further is refused.
VA_PREDICTION_SLACK = 1e-4


def _checked_va(va: np.ndarray, where: str, what: str, labels: bool = False) -> np.ndarray:
    """``va`` (N, 2) when every value is in [-1, 1] (labels: or NaN, unlabelled; predictions: within
    :data:`VA_PREDICTION_SLACK` of it, then clipped); else a ValueError naming ``where``, the frame and the value."""
    slack = 0.0 if labels else VA_PREDICTION_SLACK
    bad = ~((va >= VA_RANGE[0] - slack) & (va <= VA_RANGE[1] + slack))     # NaN is bad here ...
    if labels:
        bad &= ~np.isnan(va)                               # ... but an unlabelled label
    if bad.any():
        frame, dim = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(f"{where}: frame {frame}: {VA_NAMES[dim]} {what} {va[frame, dim]:.9g} is not in "
                         f"[{VA_RANGE[0]:g}, {VA_RANGE[1]:g}]{' or NaN (unlabelled)' if labels else ''}")
    return va if labels else np.clip(va, *VA_RANGE)


def decide(au_logits: np.ndarray, expr_logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary AUs (sigmoid above ``threshold``) and arg-max expressions from logits, as int8."""
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(x) > t  <=>  x > logit(t)
    au = (np.asarray(au_logits, dtype=np.float32) > cut).astype(np.int8)
    expr = np.asarray(expr_logits, dtype=np.float32).argmax(axis=-1).astype(np.int8)
    return au, expr


def frame_mask(result: SubjectResult, frames: str) -> np.ndarray:
    """Which frames of ``result`` belong to the frame set ``frames`` (``face_frames`` or ``all_frames``)."""
    if frames == "face_frames":
        return result.face_present
    if frames == "all_frames":
        return np.ones(len(result.face_present), bool)
    raise ValueError(f"frame set must be one of {FRAME_SETS}, got {frames!r}")


def score(
    results: list[SubjectResult], metric_variant: str, expr_classes: str = "all",
    majority: dict[str, int] | None = None, va_mean: dict[str, list[float]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, np.ndarray]]]]:
    """ABAW metrics and per-class F1 of every variant and the baseline, per frame set.

    Returns ``({frames: {"frames": {task: n}, variant: {task: {f1, acc, score} | {ccc_valence,
    ccc_arousal, score}}, "baseline": {...}}}, {frames: {task: {variant: per-class F1}}})``;
    ``majority`` is the baseline's expression per frame set (:func:`training_majority`, Neutral when
    not given), ``va_mean`` its valence and arousal (:func:`training_va_mean`, 0 when not given).
    """
    majority = majority or {}
    va_mean = va_mean or {}
    by_frames: dict[str, dict[str, Any]] = {}
    per_class: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for frames in FRAME_SETS:
        by_frames[frames], per_class[frames] = _score_frames(
            results, frames, metric_variant, expr_classes, majority.get(frames, FACELESS_EXPR))
        _score_va(by_frames[frames], results, frames, va_mean.get(frames, [FACELESS_VA] * NUM_VA))
    return by_frames, per_class


def _score_frames(
    results: list[SubjectResult], frames: str, metric_variant: str, expr_classes: str, majority: int
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Metrics of every variant and the baseline on the frame set ``frames`` of ``results``."""
    metrics: dict[str, Any] = {"frames": {}}
    metrics.update({name: {} for name in (*VARIANTS, BASELINE)})
    per_class: dict[str, dict[str, np.ndarray]] = {"au": {}, "expr": {}}
    for task in CLASSIFICATION_TASKS:
        chosen = [(r, frame_mask(r, frames)) for r in results if r.record.split(task) == "validation"]
        if not chosen:
            continue
        truth = np.concatenate([(r.au_true if task == "au" else r.expr_true)[m] for r, m in chosen])
        predictions = {
            variant: np.concatenate([(r.au_pred if task == "au" else r.expr_pred)[variant][m] for r, m in chosen])
            for variant in VARIANTS
        }
        # the trivial baseline: no AU active; always the majority training expression of this frame set
        predictions[BASELINE] = np.zeros_like(truth) if task == "au" else np.full_like(truth, majority)
        labelled = (truth >= 0).any(axis=1) if task == "au" else truth >= 0
        metrics["frames"][task] = int(labelled.sum())
        for name, pred in predictions.items():
            if task == "au":
                metrics[name]["au"] = au_metrics(truth, pred, metric_variant)
                per_class["au"][name] = au_per_class_f1(truth, pred)
            else:
                metrics[name]["expr"] = expr_metrics(truth, pred, metric_variant, expr_classes)
                per_class["expr"][name] = expr_per_class_f1(truth, pred)
    metrics[BASELINE]["expr_majority_class"] = majority
    return metrics, per_class


def _score_va(metrics: dict[str, Any], results: list[SubjectResult], frames: str, mean: list[float]) -> None:
    """Add the VA scores of every variant and the baseline (``mean``) on the frame set ``frames`` to
    ``metrics``; nothing when no VA validation frame of the set has both dimensions' labels somewhere
    (a CCC needs labelled frames)."""
    chosen = [(r, frame_mask(r, frames)) for r in results if r.va_true is not None]
    if not chosen:
        return
    truth = np.concatenate([r.va_true[m] for r, m in chosen])
    if (~np.isnan(truth)).sum(axis=0).min() == 0:
        log.info("%s: no labelled valence or arousal frame; VA is not scored on this frame set", frames)
        return
    predictions = {variant: np.concatenate([r.va_pred[variant][m] for r, m in chosen]) for variant in VARIANTS}
    # the trivial baseline: always the training mean of each dimension (a constant: CCC 0)
    predictions[BASELINE] = np.broadcast_to(np.asarray(mean, np.float32), truth.shape)
    metrics["frames"]["va"] = int((~np.isnan(truth)).any(axis=1).sum())
    for name, pred in predictions.items():
        found = va_metrics(truth, pred)
        metrics[name]["va"] = {key: found[key] for key in VA_KEYS}
    metrics[BASELINE]["va_mean"] = [float(v) for v in mean]


def _columns() -> list[tuple[str, str]]:
    """(frame set, variant-or-baseline) of every column of the tables, frame set first."""
    return [(frames, name) for frames in FRAME_SETS for name in (*VARIANTS, BASELINE)]


def per_class_rows(
    per_class: dict[str, dict[str, dict[str, np.ndarray]]], by_frames: dict[str, dict[str, Any]]
) -> list[list[str]]:
    """Rows ``[task, class, <F1 per frame set and variant>...]``: each AU, the AU mean, each expression,
    the EXPR macro F1 the scores use (over ``expr_f1_classes``)."""
    rows = []
    for task, names in (("au", AU_NAMES), ("expr", EXPR_NAMES)):
        columns = [(f, v) for f, v in _columns() if v in per_class[f][task]]
        if not columns:
            continue
        for i, name in enumerate(names):
            rows.append([task, name, *(f"{per_class[f][task][v][i]:.4f}" for f, v in columns)])
        rows.append([task, "macro", *(f"{by_frames[f][v][task]['f1']:.4f}" for f, v in columns)])
    return rows


def score_rows(by_frames: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per frame set and variant (then the baseline): frames, variant, AU f1/acc/score,
    EXPR f1/acc/score, VA ccc_valence/ccc_arousal/score, and the number of labelled frames scored for
    each task. The VA columns appear only when VA was scored on some frame set."""
    tasks = [(task, ("f1", "acc", "score")) for task in CLASSIFICATION_TASKS]
    if any("va" in by_frames[frames]["frames"] for frames in FRAME_SETS):
        tasks.append(("va", VA_KEYS))
    header = ["frames", "variant"] + [f"{task}_{key}" for task, keys in tasks for key in keys]
    header += [f"{task}_frames" for task, _ in tasks]
    rows = []
    for frames, name in _columns():
        row = [frames, name]
        for task, keys in tasks:
            values = by_frames[frames][name].get(task)
            row += [f"{values[key]:.4f}" if values else "" for key in keys]
        row += [str(by_frames[frames]["frames"].get(task, "")) for task, _ in tasks]
        rows.append(row)
    return header, rows


def calibrated_rows(by_frames: dict[str, dict[str, Any]], calibrated: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per frame set and variant: the AU f1/acc/score at the fixed threshold and at
    the model's own thresholds (:func:`calibrated_scores`), and the model's threshold strategy."""
    header = ["frames", "variant", "thresholds", *(f"au_{key}_{at}" for at in ("fixed", "own")
                                                   for key in ("f1", "acc", "score"))]
    rows = []
    for frames in FRAME_SETS:
        for variant, own in calibrated[frames].items():
            fixed = by_frames[frames][variant]["au"]
            rows.append([frames, variant, calibrated["thresholds"][variant]["strategy"],
                         *(f"{scores[key]:.4f}" for scores in (fixed, own["au"]) for key in ("f1", "acc", "score"))])
    return header, rows


def write_tables(
    folder: Path, by_frames: dict[str, dict[str, Any]], per_class: dict[str, dict[str, dict[str, np.ndarray]]],
    calibrated: dict[str, Any] | None = None,
) -> None:
    """Write ``scores`` and ``per_class_f1`` (both frame sets) as CSV and Markdown into ``folder``, and
    ``calibrated`` (:func:`calibrated_rows`) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "scores": score_rows(by_frames),
        "per_class_f1": (["task", "class", *(f"{f}.{v}" for f, v in _columns())],
                         per_class_rows(per_class, by_frames)),
    }
    if calibrated is not None:
        tables[CALIBRATED] = calibrated_rows(by_frames, calibrated)
    for name, (header, rows) in tables.items():
        (folder / f"{name}.csv").write_text(_csv_text(header, rows))
        (folder / f"{name}.md").write_text(_markdown(header, rows))


def write_plots(folder: Path, results: list[SubjectResult], per_class: dict[str, dict[str, np.ndarray]],
                cfg: EvaluateConfig) -> None:
    """Confusion matrix per variant, per-AU and per-expression F1 bars (the headline frame set, given by
    ``per_class``), timelines of a few subjects (every frame); for the VA validation subjects, VA
    timelines of a few and the valence-arousal density of the labels and the sequence model."""
    folder.mkdir(parents=True, exist_ok=True)
    variants_only = {task: {v: f1 for v, f1 in table.items() if v in VARIANTS} for task, table in per_class.items()}
    expr_subjects = [r for r in results if r.record.expr_split == "validation"]
    if expr_subjects:
        masks = [frame_mask(r, HEADLINE) for r in expr_subjects]
        expr_true = np.concatenate([r.expr_true[m] for r, m in zip(expr_subjects, masks)])
        for variant in VARIANTS:
            expr_pred = np.concatenate([r.expr_pred[variant][m] for r, m in zip(expr_subjects, masks)])
            plots.plot_confusion(expr_true, expr_pred, folder / f"confusion_{variant}.png", variant)
        plots.plot_f1_bars(variants_only["expr"], EXPR_NAMES, folder / "expr_f1.png",
                           "Per-expression F1 on the validation frames with a face")
    if variants_only["au"]:
        plots.plot_au_f1(variants_only["au"], folder / "au_f1.png", "Per-AU F1 on the validation frames with a face")
    for result in timeline_subjects(results, cfg.timeline_videos, cfg.seed):
        v = cfg.timeline_variant
        plots.plot_timeline(
            result.record.name, result.au_true, result.au_pred[v], result.expr_true, result.expr_pred,
            folder / f"timeline_{result.record.name}.png", fps=result.record.fps, au_variant=v,
            face_present=result.face_present,
        )
    va_subjects = [r for r in results if r.va_true is not None]
    for result in timeline_subjects(va_subjects, cfg.timeline_videos, cfg.seed):
        plots.plot_va_timeline(result.record.name, result.va_true, result.va_pred,
                               folder / f"va_timeline_{result.record.name}.png", fps=result.record.fps,
                               face_present=result.face_present)
    if va_subjects:
        masks = [frame_mask(r, HEADLINE) & ~np.isnan(r.va_true).any(axis=1) for r in va_subjects]
        va_true = np.concatenate([r.va_true[m] for r, m in zip(va_subjects, masks)])
        if len(va_true):
            va_pred = np.concatenate([r.va_pred["sequence"][m] for r, m in zip(va_subjects, masks)])
            plots.plot_va_density(va_true, va_pred, folder / "va_density.png", "sequence")


def write_plot_data(folder: Path, results: list[SubjectResult], per_class: dict[str, dict[str, np.ndarray]]) -> None:
    """The data of the confusion matrices, the per-AU F1 bars and the VA predictions as CSV, for ``dvc
    plots`` (the headline frame set, as the PNGs beside): ``confusion_<variant>.csv`` has one row per
    labelled face frame (``actual``, ``predicted`` expression names), ``au_f1_<variant>.csv`` one row per
    AU, ``va_<variant>.csv`` one row per VA-labelled face frame of the VA validation subjects
    (``valence``, ``valence_predicted``, ``arousal``, ``arousal_predicted``; DVC's scatter template)."""
    folder.mkdir(parents=True, exist_ok=True)
    expr_subjects = [r for r in results if r.record.expr_split == "validation"]
    if expr_subjects:
        masks = [frame_mask(r, HEADLINE) & (r.expr_true != UNLABELLED) for r in expr_subjects]
        expr_true = np.concatenate([r.expr_true[m] for r, m in zip(expr_subjects, masks)])
        for variant in VARIANTS:
            expr_pred = np.concatenate([r.expr_pred[variant][m] for r, m in zip(expr_subjects, masks)])
            rows = [[EXPR_NAMES[t], EXPR_NAMES[p]] for t, p in zip(expr_true, expr_pred)]
            (folder / f"confusion_{variant}.csv").write_text(_csv_text(["actual", "predicted"], rows))
    for variant, f1 in per_class["au"].items():
        if variant in VARIANTS:
            rows = [[name, f"{value:.6f}"] for name, value in zip(AU_NAMES, f1)]
            (folder / f"au_f1_{variant}.csv").write_text(_csv_text(["au", "f1"], rows))
    va_subjects = [r for r in results if r.va_true is not None]
    if va_subjects:
        masks = [frame_mask(r, HEADLINE) & ~np.isnan(r.va_true).any(axis=1) for r in va_subjects]
        va_true = np.concatenate([r.va_true[m] for r, m in zip(va_subjects, masks)])
        header = [f"{dim}{suffix}" for dim in VA_NAMES for suffix in ("", "_predicted")]
        for variant in VARIANTS:
            va_pred = np.concatenate([r.va_pred[variant][m] for r, m in zip(va_subjects, masks)])
            rows = [[f"{t[0]:.4f}", f"{p[0]:.4f}", f"{t[1]:.4f}", f"{p[1]:.4f}"] for t, p in zip(va_true, va_pred)]
            (folder / f"va_{variant}.csv").write_text(_csv_text(header, rows))


def timeline_subjects(results: list[SubjectResult], count: int, seed: int) -> list[SubjectResult]:
    """``count`` subjects drawn with ``seed`` (all when fewer), in name order."""
    ordered = sorted(results, key=lambda r: r.record.name)
    if count >= len(ordered):
        return ordered
    picks = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(picks)]


def write_submissions(folder: Path, results: list[SubjectResult]) -> None:
    """ABAW submission files of every variant: AU_Set for AU validation subjects, EXPR_Set for EXPR,
    VA_Set for VA."""
    for variant in VARIANTS:
        au = {r.record.name: r.au_pred[variant] for r in results if r.record.au_split == "validation"}
        expr = {r.record.name: r.expr_pred[variant] for r in results if r.record.expr_split == "validation"}
        va = {r.record.name: r.va_pred[variant] for r in results if r.va_true is not None}
        for task, predictions in (("au", au), ("expr", expr), ("va", va)):
            if predictions:
                submission.write_submission(folder, variant, task, predictions)


def _fusion_outputs(
    fusion: torch.nn.Module, visual: np.ndarray, audio: np.ndarray, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fusion head's AU logits (N, 12), EXPR logits (N, 7) and VA (N, 2) over a subject's frames."""
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    with torch.inference_mode():
        for start in range(0, len(visual), batch_size):
            v = torch.from_numpy(np.asarray(visual[start:start + batch_size], dtype=np.float32)).to(device)
            a = torch.from_numpy(np.asarray(audio[start:start + batch_size], dtype=np.float32)).to(device)
            for part, output in zip(parts, fusion(v, a)):
                part.append(output.float().cpu().numpy())
    au, expr, va = (np.concatenate(part) for part in parts)
    return au, expr, va


def _read_entry(
    store: EmbeddingStore, key: str, stage: str, names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    if not store.is_complete(key):
        raise ValueError(f"{store.path}: no complete entry for {key!r} (re-run {stage})")
    try:
        return store.read(key, names)
    except KeyError as exc:   # an array asked for by name is missing: a store from before it was written
        raise ValueError(f"{exc.args[0]} (re-run {stage})") from exc


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
