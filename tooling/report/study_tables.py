"""Renderers of the paired pretraining study (``experiments/pretrain_study.sh``, an ``mmaffect ablate --replicates
--json`` record): the docs' table of arms and paired differences, and the README's one-sentence result.

The record declares its statistic and equivalence margin before the first run (``statistic``,
``equivalence_margin``); each paired difference carries its 95 % interval and verdict
(:mod:`pipeline.paired_stats`). The declared statistic is shown first and alone decides the result;
the AU and EXPR scores' differences are shown as exploratory.
"""

from __future__ import annotations

from typing import Any, Mapping

from tooling.report.markdown import score, signed_gain, table

SOURCE = "benchmarks/results/pretrain_study.json"
SEQUENCE_SOURCE = "benchmarks/results/pretrain_study_sequence.json"   # its sequence-model part, step (d)
ARM, REFERENCE = "pretrained", "scratch"   # the comparison the study is about; the controls check the method
SEQUENCE_ARM, SEQUENCE_REFERENCE = "sequence-pretrained", "sequence-scratch"   # the same, through the whole pipeline
_TITLES = {"au_expr_score": "mean of the AU and EXPR scores", "au.score": "AU score", "expr.score": "EXPR score",
           "va.score": "VA score"}
_VERDICTS = {
    "difference": "a difference (the 95 % interval excludes 0)",
    "equivalent": "equivalent within ±{margin} (two one-sided tests: the 90 % interval lies inside it)",
    "inconclusive": "inconclusive (the interval holds 0 but reaches past ±{margin}: neither a difference nor "
                    "equivalence)",
}
MISSING = ("The paired pretraining study (`experiments/pretrain_study.sh`: 4 arms, 8 paired replicates, its "
           "statistic and equivalence margin declared before the runs) has not been run yet; it writes "
           f"`{SOURCE}`, and `mmaffect report` renders it here.")
SEQUENCE_MISSING = ("The sequence-model part (step (d) of `experiments/pretrain_study.sh`: 2 arms, paired replicates "
                    "through the whole pipeline, its statistic and equivalence margin declared before the runs) has "
                    f"not been run yet; it writes `{SEQUENCE_SOURCE}`, and `mmaffect report` renders it here.")
HEADLINE_MISSING = ("*The paired pretraining study has not been run yet: its result will stand here, with its "
                    "interval and verdict ([docs/results.md](docs/results.md#the-paired-pretraining-study)).*")
SEQUENCE_HEADLINE_MISSING = ("*The study's sequence-model part has not been run yet "
                             "([docs/results.md](docs/results.md#the-sequence-model)).*")


def _title(doc: Mapping[str, Any], metric: str) -> str:
    """A metric's name for a reader; ``mean_score`` names the tasks it averaged in this record."""
    if metric == "mean_score":
        with_va = any("va.score" in arm["mean"] for arm in doc["arms"])
        return "mean of the AU, EXPR and VA scores" if with_va else "mean of the AU and EXPR scores"
    return _TITLES.get(metric, metric)


def _interval(values: list[float] | None) -> str:
    return "–" if not values else f"{signed_gain(values[0])} to {signed_gain(values[1])}"


def _mean_sd(mean: float | None, sd: float | None, signed: bool = False) -> str:
    if mean is None:
        return "–"
    text = signed_gain(mean) if signed else score(mean)
    return text if sd is None else f"{text} ± {score(sd)}"


def _verdict(verdict: str | None, margin: float) -> str:
    return _VERDICTS[verdict].format(margin=margin) if verdict else "–"


def study_table(doc: Mapping[str, Any]) -> str:
    """docs/results.md: what was declared, each arm's mean ± sd over its replicates, and each paired difference
    against the reference with its 95 % interval, equivalence test and verdict; then where it was measured."""
    statistic, margin = doc["statistic"], doc["equivalence_margin"]
    metrics = list(doc["metrics"])
    title = _title(doc, statistic)
    variant = f" `{doc['variant']}`" if doc.get("variant") else ""
    lines = [f"Declared before the runs: the statistic `{statistic}` ({title}) of `{doc['metrics_file']}`{variant}, "
             f"the paired difference of each arm and `{', '.join(doc['plan']['references'])}` in the same "
             f"replicate (every seed of the draw and the training set to the replicate: "
             f"{', '.join(f'`{p}`' for p in doc.get('replicate_params') or [])}), its 95 % t interval, and "
             f"equivalence within ±{margin} by two one-sided t tests. The other scores are exploratory.", ""]
    arm_rows = [[f"`{arm['arm']}`", arm["n"], *[_mean_sd(arm["mean"].get(m), arm["sd"].get(m)) for m in metrics]]
                for arm in doc["arms"]]
    lines.append(table(["arm", "replicates", *[f"{_title(doc, m)}{' (declared)' if m == statistic else ''}"
                                               for m in metrics]], arm_rows))
    lines.append("")
    diff_rows = [[f"`{d['arm']} − {d['reference']}`", d["n"], _mean_sd(d["mean"].get(statistic),
                                                                          d["sd"].get(statistic), signed=True),
                  _interval(d["ci95"].get(statistic)), _interval(d["ci90"].get(statistic)),
                  "–" if d["tost_p"].get(statistic) is None else f"{d['tost_p'][statistic]:.3f}",
                  _verdict(d["verdict"].get(statistic), margin)] for d in doc["differences"]]
    lines.append(table(["paired difference", "pairs", f"{_title(doc, statistic)} (declared)",
                        "95 % CI", "90 % CI", "TOST p", "verdict"], diff_rows))
    exploratory = [f"`{d['arm']} − {d['reference']}` {_title(doc, m)} {_mean_sd(d['mean'].get(m), None, True)} "
                   f"(95 % CI {_interval(d['ci95'].get(m))}: {d['verdict'].get(m) or '–'})"
                   for d in doc["differences"] for m in metrics if m != statistic and m in d["mean"]]
    if exploratory:
        lines += ["", "Exploratory: " + "; ".join(exploratory) + "."]
    lines += ["", _provenance(doc)]
    return "\n".join(lines)


def _difference(doc: Mapping[str, Any], arm: str, reference: str) -> Mapping[str, Any]:
    """The record's paired difference ``arm − reference``; a KeyError naming it when the record lacks it."""
    matches = [d for d in doc["differences"] if d["arm"] == arm and d["reference"] == reference]
    if not matches:
        raise KeyError(f"differences[{arm} − {reference}]")
    return matches[0]


def _result(doc: Mapping[str, Any], diff: Mapping[str, Any]) -> str:
    """``-0.036 (95 % CI ..., n = 8 paired replicates, at commit ...): inconclusive``, for a sentence."""
    statistic = doc["statistic"]
    interval = diff["ci95"].get(statistic)
    spread = f"95 % CI {_interval(interval)}, " if interval else "no interval from one pair, "
    partial = "" if doc.get("complete") else " (the study is not complete yet)"
    return (f"{signed_gain(diff['mean'][statistic])} ({spread}n = {diff['n']} paired replicates{_at_commit(doc)})"
            f"{partial}: {diff['verdict'][statistic]}")


def study_headline(doc: Mapping[str, Any]) -> str:
    """README: the declared statistic's paired difference ``pretrained − scratch``, its interval and verdict, in
    one sentence, and what the study does not test."""
    diff = _difference(doc, ARM, REFERENCE)
    return (f"*Pretraining on synthetic people changed the visual-only model's face-frame score "
            f"({_title(doc, doc['statistic'])}) by {_result(doc, diff)}, "
            f"the test declared before the runs, with equivalence at ±{doc['equivalence_margin']} "
            f"([docs/results.md](docs/results.md#the-paired-pretraining-study)). This tests the pipeline's "
            f"pretraining path on synthetic people, not the paper's Glint360K claim.*")


def sequence_headline(doc: Mapping[str, Any]) -> str:
    """README: the same sentence for the study's sequence-model part, ``sequence-pretrained − sequence-scratch``."""
    diff = _difference(doc, SEQUENCE_ARM, SEQUENCE_REFERENCE)
    return (f"*Through the whole pipeline, the sequence model's face-frame score ({_title(doc, doc['statistic'])}) "
            f"changed by {_result(doc, diff)}, declared the same way "
            f"([docs/results.md](docs/results.md#the-sequence-model)).*")


def _at_commit(doc: Mapping[str, Any]) -> str:
    """Which pipeline the runs measured: ``, at commit 0123456789``, or nothing when the record does not say."""
    return f", at commit {str(doc['git_commit'])[:10]}" if doc.get("git_commit") else ""


def _provenance(doc: Mapping[str, Any]) -> str:
    done = sum(1 for run in doc["runs"] if run.get("metrics"))
    state = "" if doc.get("complete") else f" Not complete: {done} runs so far."
    resumed = f", resumed {len(doc['resumed'])} time(s)" if doc.get("resumed") else ""
    return (f"Started {doc.get('date', '?')}{resumed}, finished {doc.get('finished', '–')}, with `{doc['command']}` "
            f"on {doc.get('cpu', '?')} at commit {str(doc.get('git_commit', '?'))[:10]}.{state}")
