"""Renderers of ``mmaffect ablate --json`` records: the per-arm table and the spread between runs."""

from __future__ import annotations

from typing import Any

from pipeline.ablation import render_ablation_table
from tooling.report.markdown import score

_TASKS = (("au.score", "AU"), ("expr.score", "EXPR"))


def noise_verdict(mean: float, sd: float | None, n: int) -> str:
    """Whether a paired mean difference is distinguishable from zero: a two-sided 95 % paired t-test."""
    from scipy.stats import t

    if sd is None or n < 2:
        return "one pair: no spread to judge by"
    if sd == 0:
        return "beyond the noise" if mean else "within the noise"
    limit = float(t.ppf(0.975, n - 1)) * sd / n ** 0.5
    return "beyond the noise" if abs(mean) > limit else "within the noise"


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
        lines.append(f"- `{diff['arm']} − {diff['reference']}` over {diff['n']} pairs (95 %, paired t-test): "
                     + "; ".join(verdicts))
    return lines


def _provenance(doc: dict[str, Any]) -> str:
    return (f"Measured {doc.get('finished', doc.get('date', '?'))} with `{doc['command']}` on "
            f"{doc.get('cpu', '?')} at commit {str(doc.get('git_commit', '?'))[:10]}.")
