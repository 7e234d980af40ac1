"""Renderers of the pipeline's own metrics files (``metrics/*.json``, written by the stages).

A trainer's file reports the kept epoch on two frame sets, ``face_frames`` (frames with a face crop,
the paper's) and ``all_frames`` (every labelled frame), and says how the epoch was kept
(``selection``). A file written before the trainers did so holds one set's scores at its top level
and was selected on validation; :func:`frame_reports` and :func:`selection_mode` read both layouts,
so the committed files render until the pipeline is rerun. The evaluate blocks show valence-arousal
(VA) beside AU and EXPR, ``n/a`` for a record without it (one written before VA was scored, or from
an Aff-Wild2 copy without ``VA_Set``).
"""

from __future__ import annotations

from typing import Any

from pipeline.labels import EXPR_NAMES, TASKS
from tooling.report.bench_tables import cpu_label
from tooling.report.markdown import count, score, signed_gain, table

SCORE_HEADER = ("variant", "AU F1", "AU acc", "AU score", "EXPR F1", "EXPR acc", "EXPR score")
VA_HEADER = ("VA CCC valence", "VA CCC arousal", "VA score")
NOT_AVAILABLE = "n/a"   # a VA cell of a record without VA scores
FRAME_LABELS = {"face_frames": "face frames", "all_frames": "all frames"}
SELECTION_LABELS = {
    "holdout": "best on the held-out training videos",
    "validation": "best on the validation sets (optimistic: the scores include that choice)",
    "last": "the last epoch",
}


def frame_reports(metrics: dict[str, Any], key: str | None, legacy_frames: str) -> dict[str, dict[str, Any]]:
    """``{frame set: scores}`` of a trainer's report ``metrics[key]`` (``key`` ``None``: the sets are
    at the top of ``metrics``, as in a baseline entry). A file of the earlier layout holds one set,
    ``legacy_frames``, as ``{"au", "expr", "score"}`` in ``metrics[key]``, or at the top of ``metrics``
    where it has no ``key`` (the validation scores)."""
    source = metrics if key is None or key not in metrics else metrics[key]
    if "face_frames" in source or "all_frames" in source:
        return {name: source[name] for name in FRAME_LABELS if name in source}
    return {legacy_frames: source}


def selection_mode(metrics: dict[str, Any]) -> str:
    """How the trainer kept its epoch (files of the earlier layout were selected on validation)."""
    return metrics["selection"]["mode"] if "selection" in metrics else "validation"


def _score_row(label: str, scores: dict[str, Any], bold: bool = False) -> list[str]:
    au, expr = scores["au"], scores["expr"]
    mark = (lambda s: f"**{s}**") if bold else (lambda s: s)
    return [label, score(au["f1"]), score(au["acc"]), mark(score(au["score"])),
            score(expr["f1"]), score(expr["acc"]), mark(score(expr["score"]))]


def _va_cells(scores: dict[str, Any], keys: tuple[str, ...] = ("ccc_valence", "ccc_arousal", "score"),
              bold: bool = False) -> list[str]:
    """The VA cells of one evaluate row, ``n/a`` where the record has no ``va`` entry."""
    va = scores.get("va")
    if va is None:
        return [NOT_AVAILABLE] * len(keys)
    return [f"**{score(va[key])}**" if bold and key == "score" else score(va[key]) for key in keys]


def _evaluate_rows(scores: dict[str, Any], va_keys: tuple[str, ...]) -> list[list[str]]:
    """One frame set's rows of the evaluate tables: the trivial baseline, then each variant, with AU,
    EXPR and the VA columns ``va_keys``."""
    baseline = scores["baseline"]
    label = f"trivial baseline (no AU active / always {EXPR_NAMES[baseline['expr_majority_class']]}"
    label += " / VA training mean)" if "va" in baseline else ")"
    rows = [_score_row(label, baseline) + _va_cells(baseline, va_keys)]
    rows += [_score_row(name, scores[variant]) + _va_cells(scores[variant], va_keys) for variant, name in VARIANT_LABELS]
    return rows


def _frame_counts(counts: dict[str, int], where: str = "") -> str:
    """``1,200 AU, 900 EXPR and 800 VA validation frames<where>``, or for a record without VA
    ``1,200 AU and 900 EXPR validation frames<where> (no VA scores in this record)``."""
    if "va" not in counts:
        return (f"{count(counts['au'])} AU and {count(counts['expr'])} EXPR validation frames{where} "
                "(no VA scores in this record)")
    return f"{count(counts['au'])} AU, {count(counts['expr'])} EXPR and {count(counts['va'])} VA validation frames{where}"


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
    """docs/results.md: per frame set, the trivial baseline and the three evaluated variants on the same
    frames, AU and EXPR F1/acc/score and VA CCC per dimension and score."""
    parts = []
    for frames, title in FRAME_SETS:
        scores = evaluate[frames]
        rows = _evaluate_rows(scores, ("ccc_valence", "ccc_arousal", "score"))
        parts.append(f"{title}: {_frame_counts(scores['frames'])}, "
                     f"key `{frames}` of `metrics/evaluate.json`.\n\n" + table(SCORE_HEADER + VA_HEADER, rows))
    return "\n\n".join(parts)


def results_headline(evaluate: dict[str, Any]) -> str:
    """README results: the trivial baseline and the three variants on the frames with a face crop (the
    paper's scoring), AU and EXPR F1/acc/score and the VA score, with the frame counts."""
    scores = evaluate["face_frames"]
    rows = _evaluate_rows(scores, ("score",))
    return (table(SCORE_HEADER + VA_HEADER[-1:], rows) + f"\n\nSynthetic demo, one run: "
            f"{_frame_counts(scores['frames'], ' with a face crop')}, key `face_frames` of "
            "`metrics/evaluate.json`.")


CALIBRATION_HEADER = ("variant", "thresholds", "AU F1 at 0.5", "AU F1 at its own", "AU score at 0.5",
                      "AU score at its own", "change")
CALIBRATION_PENDING = ("The committed `metrics/evaluate.json` was written before the models carried AU thresholds: "
                       "rerun the pipeline (`dvc repro`) and `mmaffect report`, which renders here how far each "
                       "model's own thresholds move its AU score.")


def calibration_table(evaluate: dict[str, Any]) -> str:
    """docs/selection.md: each variant's AU scores on the validation face frames at 0.5 and at the
    thresholds its model carries (``calibrated`` of the evaluate JSON), and the change."""
    if "calibrated" not in evaluate:
        return CALIBRATION_PENDING
    calibrated, fixed = evaluate["calibrated"]["face_frames"], evaluate["face_frames"]
    rows = []
    for variant, label in VARIANT_LABELS:
        if variant not in calibrated:
            continue
        own, at_half = calibrated[variant]["au"], fixed[variant]["au"]
        rows.append([label, evaluate["calibrated"]["thresholds"][variant]["strategy"], score(at_half["f1"]),
                     score(own["f1"]), score(at_half["score"]), score(own["score"]),
                     signed_gain(own["score"] - at_half["score"])])
    return (table(CALIBRATION_HEADER, rows) + f"\n\nSynthetic demo, one run: {count(fixed['frames']['au'])} AU "
            "validation frames with a face crop; keys `face_frames.<variant>.au` and "
            "`calibrated.face_frames.<variant>.au` of `metrics/evaluate.json`.")


def results_gains(evaluate: dict[str, Any]) -> str:
    """README prose: how far the fusion head and the sequence model are from visual-only, per frame set,
    in this one run (with a pointer to the spread between runs)."""
    sentences = []
    for frames, where in (("face_frames", "on the frames with a face"), ("all_frames", "on all labelled frames")):
        visual = evaluate[frames]["visual"]
        parts = []
        for label, variant in (("the sequence model", "sequence"), ("the per-frame A+V fusion head", "fusion")):
            other = evaluate[frames][variant]
            tasks = [task for task in TASKS if task in visual and task in other]   # VA: where both have it
            gains = [f"{signed_gain(_gain(other, visual, task))} ({task.upper()})" for task in tasks]
            parts.append(f"{label} {', '.join(gains[:-1])} and {gains[-1]}")
        sentences.append(f"Score difference over visual-only {where}: {parts[0]}; {parts[1]}.")
    return ("In this one run: " + " ".join(sentences) + " One run cannot tell such a difference from the "
            "spread between runs: which ones exceed it is measured under "
            "[How much the results vary](docs/results.md#how-much-the-results-vary).")


def visual_demo(visual: dict[str, Any]) -> str:
    """docs/visual.md: frame counts, the fine-tuned model against the trivial baseline on each frame
    set, and how the published epoch was kept."""
    frames = visual["frames"]
    held = (f"; {count(frames['selection'])} held-out selection frames ({count(frames['au_selection'])} AU, "
            f"{count(frames['expr_selection'])} EXPR)" if frames.get("selection") else "")
    intro = (
        f"Frames with a face, labelled: {count(frames['au_train'])} AU and {count(frames['expr_train'])} "
        f"EXPR training frames; {count(frames['val'])} validation frames ({count(frames['au_val'])} AU, "
        f"{count(frames['expr_val'])} EXPR){held}. Published model: `best_epoch` {visual['best_epoch']} of "
        f"`epochs` {visual['epochs']}, {SELECTION_LABELS[selection_mode(visual)]}."
    )
    model = frame_reports(visual, "validation", "face_frames")
    baseline = frame_reports(visual["baseline"], None, "face_frames")
    rows = []
    for name in model:
        rows.append(_score_row(f"fine-tuned (demo params), {FRAME_LABELS[name]}", model[name], bold=True))
        rows.append(_score_row(f"baseline: all AUs negative / always {_majority(visual)}, {FRAME_LABELS[name]}",
                               baseline[name]))
    return intro + "\n\n" + table(("model", *SCORE_HEADER[1:]), rows)


def pretrain_demo(pretrain: dict[str, Any]) -> str:
    """README and docs/pretrain.md: what the published backbone learnt, read against its start and chance."""
    kept, start = pretrain["verification"], pretrain["initial"]
    losses = ", ".join(f"{h['loss']:.1f}" for h in pretrain["history"]) or "none (published as given)"
    data = pretrain["data"]
    chance = f" against a chance loss of {pretrain['chance_loss']:.1f}" if "chance_loss" in pretrain else ""
    return (
        f"The backbone `finetune-visual` starts from (`metrics/pretrain.json`): held-out pair accuracy "
        f"**{kept['accuracy']:.3f}** ({start['accuracy']:.3f} at its start; TAR at FAR {kept['far']:g} "
        f"{kept['tar_at_far']:.2f}), epoch {pretrain['best_epoch']} of {pretrain['epochs']} kept; margin-softmax "
        f"loss per epoch {losses}{chance}; {count(data['train_identities'])} training and "
        f"{count(data['holdout_identities'])} held-out identities, {count(data['pairs'])} pairs."
    )


def audio_demo(audio: dict[str, Any]) -> str:
    """docs/audio.md: the A+V fusion head against the frozen visual model's own logits, on each frame set."""
    fused = frame_reports(audio, "validation", "all_frames")
    visual = frame_reports(audio, "visual_only", "all_frames")
    rows, gains = [], []
    for name in fused:
        label = FRAME_LABELS[name]
        rows.append(_score_row(f"visual-only (the fine-tuned model's cached logits), {label}", visual[name]))
        rows.append(_score_row(f"A+V fusion head (`best_epoch` {audio['best_epoch']}, `epochs` {audio['epochs']}), "
                               f"{label}", fused[name], bold=True))
        au, expr = (signed_gain(_gain(fused[name], visual[name], task)) for task in ("au", "expr"))
        gains.append(f"{au} (AU), {expr} (EXPR) on {label}")
    return (table(SCORE_HEADER, rows) + f"\n\nFusion minus visual-only: {'; '.join(gains)}. Kept epoch: "
            f"{SELECTION_LABELS[selection_mode(audio)]}.")


def cross_cpu(record: dict[str, Any]) -> str:
    """README: the demo's committed scores beside a rerun of the same commit on another CPU model
    (``benchmarks/cross_cpu.py``), on the frames with a face."""
    committed, reproduced = (record["results"][key]["face_frames"] for key in ("committed", "reproduced"))
    rows = []
    for variant, label in (("baseline", "trivial baseline"), *VARIANT_LABELS):
        cells = [label]
        for task in ("au", "expr"):
            before, after = committed[variant][task]["score"], reproduced[variant][task]["score"]
            cells += [score(before), score(after), signed_gain(after - before)]
        rows.append(cells)
    machine = record["machine"]
    header = ("variant (face frames)", "AU, committed", "AU, rerun", "change", "EXPR, committed", "EXPR, rerun",
              "change")
    return (table(header, rows) + f"\n\nCommitted: `metrics/evaluate.json` of commit {record['commit'][:7]}, "
            f"written on {record['reference_machine']}. Rerun: `make repro` of the same commit in a fresh clone on "
            f"{cpu_label(machine)} ({machine['cpu_count']} cores), recorded {record['date']} with `{record['command']}`. "
            f"Record: `benchmarks/results/cross_cpu.json`.")
