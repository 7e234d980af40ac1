"""Renderers of ``mmaffect ablate --json`` records: the per-arm table and the spread between runs."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from pipeline.ablation import render_ablation_table
from tooling.report.markdown import score

_TASKS = (("au.score", "AU"), ("expr.score", "EXPR"))
# The mean score's paired test was added after these ablations had run; its verdict is shown, and
# named exploratory, because a test chosen after seeing the data cannot confirm what it finds.
_EXPLORATORY = (("mean_score", "mean score"),)

# The sequence-model ablations name their arms by the embeddings the sequence model reads; shown as
# is, `visual` reads like the visual-only model of the results table, so the tables say `seq-`.
SEQUENCE_ARMS: dict[str, str] = {
    "visual": "seq-visual", "audio": "seq-audio", "both": "seq-av", "both-w1-b320": "seq-av-1frame",
}


def relabel_arms(doc: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """A copy of an ``mmaffect ablate --json`` record whose arm names are replaced by ``labels`` (others kept)."""
    out = copy.deepcopy(doc)
    for entry in (*out["arms"], *out["runs"]):
        entry["arm"] = labels.get(entry["arm"], entry["arm"])
    for diff in out["differences"]:
        diff["arm"] = labels.get(diff["arm"], diff["arm"])
        diff["reference"] = labels.get(diff["reference"], diff["reference"])
    return out


def sequence_arm_note() -> str:
    """The sentence that maps the shown arm names to the record's (and the command line's)."""
    names = ", ".join(f"`{shown}` = `{arm}`" for arm, shown in SEQUENCE_ARMS.items())
    return (f"Every arm is the sequence model, fed the embeddings its name says ({names} in the record and on "
            "the command line; `1frame`: one-frame windows).")


def noise_verdict(mean: float, sd: float | None, n: int) -> str:
    """Whether a paired mean difference is distinguishable from zero: a two-sided 95 % paired t-test."""
    from scipy.stats import t

    if sd is None or n < 2:
        return "one pair: no spread to judge by"
    if sd == 0:
        return "beyond the noise" if mean else "within the noise"
    limit = float(t.ppf(0.975, n - 1)) * sd / n ** 0.5
    return "beyond the noise" if abs(mean) > limit else "within the noise"


def seed_band_sequence(doc: dict[str, Any]) -> str:
    """:func:`seed_band` of a sequence-model ablation, its arms named as :data:`SEQUENCE_ARMS`."""
    return sequence_arm_note() + "\n\n" + seed_band(relabel_arms(doc, SEQUENCE_ARMS))


def draw_table_sequence(doc: dict[str, Any]) -> str:
    """:func:`draw_table` of a sequence-model ablation, its arms named as :data:`SEQUENCE_ARMS`."""
    return sequence_arm_note() + "\n\n" + draw_table(relabel_arms(doc, SEQUENCE_ARMS))


def seed_band(doc: dict[str, Any]) -> str:
    """README: the per-arm mean ± sd table, then each arm's range (lowest to highest score) over its runs.

    The range over training seeds stands in for the band a user on another CPU should expect: a
    different rounding, like a different seed, sends training down another path on the same data.
    """
    lines = []
    for arm in doc["arms"]:
        runs = [run for run in doc["runs"] if run["arm"] == arm["arm"]]
        spans = []
        for key, label in _TASKS:
            values = [float(run["metrics"][key]) for run in runs if key in run["metrics"]]
            if values:
                spans.append(f"{label} {score(min(values))}–{score(max(values))} "
                             f"(range {score(max(values) - min(values))})")
        lines.append(f"- `{arm['arm']}`, {len(runs)} runs: " + "; ".join(spans))
    lines += _verdict_lines(doc)
    seeds = ", ".join(doc.get("seed_params") or []) or "the trained stages' seeds"
    return (render_ablation_table(doc) + "\n"
            + f"Lowest to highest score over the runs ({seeds} varied together, one synthetic draw), "
            + "and whether each paired difference exceeds the spread:\n\n"
            + "\n".join(lines) + "\n\n" + _provenance(doc))


def draw_table(doc: dict[str, Any]) -> str:
    """README: the per-arm mean ± sd over synthetic draws, each arm's scores draw by draw, and whether each
    paired difference exceeds the spread between draws."""
    draws = sorted({run["draw"] for run in doc["runs"]})
    header = ["arm", *[f"draw {d} (AU / EXPR)" for d in draws]]
    rows = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for arm in doc["arms"]:
        cells = []
        for draw in draws:
            runs = [run for run in doc["runs"] if run["arm"] == arm["arm"] and run["draw"] == draw]
            cells.append(" ; ".join(f"{score(run['metrics']['au.score'])} / {score(run['metrics']['expr.score'])}"
                                    for run in runs) or "–")
        rows.append("| " + " | ".join([arm["arm"], *cells]) + " |")
    return (render_ablation_table(doc) + "\n" + "\n".join(rows) + "\n\n"
            + "Whether each paired difference (same draw) exceeds the spread between draws:\n\n"
            + "\n".join(_verdict_lines(doc)) + "\n\n" + _provenance(doc))


def _verdict_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for diff in doc["differences"]:
        verdicts = [f"{label} {noise_verdict(diff['mean'][key], diff['sd'].get(key), diff['n'])}"
                    for key, label in _TASKS if key in diff["mean"]]
        verdicts += [f"{label} {noise_verdict(diff['mean'][key], diff['sd'].get(key), diff['n'])} (exploratory)"
                     for key, label in _EXPLORATORY if key in diff["mean"]]
        lines.append(f"- `{diff['arm']} − {diff['reference']}` over {diff['n']} pairs (95 %, paired t-test): "
                     + "; ".join(verdicts))
    return lines


def _provenance(doc: dict[str, Any]) -> str:
    return (f"Measured {doc.get('finished', doc.get('date', '?'))} with `{doc['command']}` on "
            f"{doc.get('cpu', '?')} at commit {str(doc.get('git_commit', '?'))[:10]}.")
