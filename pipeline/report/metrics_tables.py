"""Renderers of the pipeline's own metrics files (``metrics/*.json``, written by the stages)."""

from __future__ import annotations

from typing import Any

from pipeline.labels import EXPR_NAMES
from pipeline.report.markdown import count, score, signed_gain, table

SCORE_HEADER = ("variant", "AU F1", "AU acc", "AU score", "EXPR F1", "EXPR acc", "EXPR score")


def _score_row(label: str, scores: dict[str, Any], bold: bool = False) -> list[str]:
    au, expr = scores["au"], scores["expr"]
    mark = (lambda s: f"**{s}**") if bold else (lambda s: s)
    return [label, score(au["f1"]), score(au["acc"]), mark(score(au["score"])),
            score(expr["f1"]), score(expr["acc"]), mark(score(expr["score"]))]


def _majority(visual: dict[str, Any]) -> str:
    """The expression the trivial baseline predicts (the training majority class)."""
    return EXPR_NAMES[visual["baseline"]["expr_majority_class"]]


def _gain(better: dict[str, Any], base: dict[str, Any], task: str) -> float:
    return better[task]["score"] - base[task]["score"]


FRAME_SETS: tuple[tuple[str, str], ...] = (
    ("face_frames", "**Frames with a face crop** (the paper's scoring, §4.4: labelled frames without a cropped "
                    "face are discarded)"),
    ("all_frames", "**All labelled frames** (our addition: also the frames without a face, which the fusion "
                   "head and the sequence model predict from the audio and the context; there the visual-only "
                   "model has no input and predicts no AU active and Neutral)"),
)
VARIANT_LABELS: tuple[tuple[str, str], ...] = (
    ("visual", "visual-only (fine-tuned IResNet)"),
    ("fusion", "A+V fusion head (`train-audio`)"),
    ("sequence", "sequence model (transformer over cached visual + audio windows)"),
)


def results_table(evaluate: dict[str, Any]) -> str:
    """README results: per frame set, the trivial baseline and the three evaluated variants on the same frames."""
    parts = []
    for frames, title in FRAME_SETS:
        scores = evaluate[frames]
        counts = scores["frames"]
        baseline = scores["baseline"]
        majority = EXPR_NAMES[baseline["expr_majority_class"]]
        rows = [_score_row(f"trivial baseline (no AU active / always {majority})", baseline)]
        rows += [_score_row(label, scores[variant]) for variant, label in VARIANT_LABELS]
        parts.append(f"{title}: {count(counts['au'])} AU and {count(counts['expr'])} EXPR validation frames, "
                     f"key `{frames}` of `metrics/evaluate.json`.\n\n" + table(SCORE_HEADER, rows))
    return "\n\n".join(parts)


def results_gains(evaluate: dict[str, Any]) -> str:
    """README prose: how far the fusion head and the sequence model are from visual-only, per frame set."""
    sentences = []
    for frames, where in (("face_frames", "on the frames with a face"), ("all_frames", "on all labelled frames")):
        visual = evaluate[frames]["visual"]
        parts = []
        for label, variant in (("the sequence model", "sequence"), ("the per-frame A+V fusion head", "fusion")):
            gains = [signed_gain(_gain(evaluate[frames][variant], visual, task)) for task in ("au", "expr")]
            parts.append(f"{label} {gains[0]} (AU) and {gains[1]} (EXPR)")
        sentences.append(f"Score difference over visual-only {where}: {parts[0]}; {parts[1]}.")
    return " ".join(sentences)


def visual_demo(visual: dict[str, Any]) -> str:
    """docs/visual.md: frame counts, the fine-tuned model against the trivial baseline, best epoch."""
    frames = visual["frames"]
    intro = (
        f"Frames (faces present, labelled): {count(frames['au_train'])} AU and {count(frames['expr_train'])} "
        f"EXPR training frames; {count(frames['val'])} validation frames ({count(frames['au_val'])} AU, "
        f"{count(frames['expr_val'])} EXPR). Published model: `best_epoch` {visual['best_epoch']} of "
        f"`epochs` {visual['epochs']}, mean of the AU and EXPR scores {score(visual['score'])}."
    )
    rows = [
        _score_row("fine-tuned (demo params)", visual, bold=True),
        _score_row(f"baseline: all AUs negative / always {_majority(visual)}", visual["baseline"]),
    ]
    return intro + "\n\n" + table(("model", *SCORE_HEADER[1:]), rows)


def audio_demo(audio: dict[str, Any]) -> str:
    """docs/audio.md: the A+V fusion head against the frozen visual model's own logits."""
    rows = [
        _score_row("visual-only (the fine-tuned model's cached logits)", audio["visual_only"]),
        _score_row(f"A+V fusion head (`best_epoch` {audio['best_epoch']}, `epochs` {audio['epochs']})", audio, bold=True),
    ]
    gains = [signed_gain(_gain(audio, audio["visual_only"], task)) for task in ("au", "expr")]
    return table(SCORE_HEADER, rows) + f"\n\nFusion minus visual-only: {gains[0]} (AU), {gains[1]} (EXPR)."
