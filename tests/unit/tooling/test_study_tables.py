"""The paired pretraining study's blocks, rendered from a small record built here as ``mmaffect ablate`` builds it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.ablation import summarize_runs
from tooling.report.study_tables import sequence_headline, study_headline, study_table

# mean_score per replicate (AU, EXPR scores), pretrained and scratch
PRETRAINED = [(0.50, 0.30), (0.52, 0.36), (0.47, 0.31), (0.55, 0.33)]
SCRATCH = [(0.60, 0.40), (0.58, 0.44), (0.61, 0.39), (0.62, 0.41)]


def _record(pretrained=PRETRAINED, scratch=SCRATCH, complete: bool = True) -> dict:
    runs = [{"experiment": f"{arm}-r{r}", "arm": arm, "replicate": r, "draw": None, "seed": None, "params": {},
             "metrics": {"au.score": au, "expr.score": expr, "mean_score": (au + expr) / 2}}
            for r in range(len(pretrained)) for arm, (au, expr) in (("pretrained", pretrained[r]),
                                                                   ("scratch", scratch[r]))]
    return {"command": "mmaffect ablate --grid experiments/pretrain_arms.yaml --replicates 4",
            "date": "2026-12-06T10:00:00+00:00", "finished": "2026-12-06T12:00:00+00:00", "git_commit": "0123456789abcdef", "cpu": "AMD EPYC",
            "metrics_file": "metrics/visual.json", "variant": "validation.face_frames",
            "replicate_params": ["synth.seed", "finetune_visual.seed"], "complete": complete,
            "plan": {"references": ["scratch"]}, "runs": runs,
            **summarize_runs(runs, ["scratch"], statistic="mean_score", margin=0.02)}


def _paired_mean_and_interval() -> tuple[float, float, float]:
    """The mean-score difference and its 95 % interval, by scipy's paired t test."""
    a = [(au + expr) / 2 for au, expr in PRETRAINED]
    b = [(au + expr) / 2 for au, expr in SCRATCH]
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    return float(np.mean(np.subtract(a, b))), low, high


def test_the_table_shows_the_declared_statistic_first_with_interval_and_verdict() -> None:
    text = study_table(_record())
    mean, low, high = _paired_mean_and_interval()
    assert "Declared before the runs: the statistic `mean_score`" in text and "±0.02" in text
    assert "| arm | replicates | mean of the AU and EXPR scores (declared) | AU score | EXPR score |" in text
    row = [line for line in text.splitlines() if line.startswith("| `pretrained − scratch`")][0]
    assert row.startswith(f"| `pretrained − scratch` | 4 | {mean:+.3f} ± ")
    assert f"| {low:+.3f} to {high:+.3f} |" in row and row.endswith("| a difference (the 95 % interval excludes 0) |")
    assert "Exploratory: `pretrained − scratch` AU score" in text
    assert text.endswith("with `mmaffect ablate --grid experiments/pretrain_arms.yaml --replicates 4` on AMD EPYC "
                         "at commit 0123456789.")


def test_the_headline_is_one_sentence_with_interval_n_and_verdict() -> None:
    mean, low, high = _paired_mean_and_interval()
    assert study_headline(_record()) == (
        f"*Pretraining on synthetic people changed the visual-only model's face-frame score (mean of the AU and "
        f"EXPR scores) by {mean:+.3f} (95 % CI {low:+.3f} to {high:+.3f}, n = 4 paired replicates, at commit 0123456789): difference, "
        "the test declared before the runs, with equivalence at ±0.02 "
        "([docs/results.md](docs/results.md#the-paired-pretraining-study)). This tests the pipeline's pretraining "
        "path on synthetic people, not the paper's Glint360K claim.*")


def test_identical_arms_read_as_equivalent_and_one_pair_has_no_interval() -> None:
    same = _record(pretrained=SCRATCH)
    assert "equivalent within ±0.02" in study_table(same)
    assert "by +0.000 (95 % CI +0.000 to +0.000, n = 4 paired replicates, at commit 0123456789): equivalent" \
        in study_headline(same)
    one = _record(pretrained=PRETRAINED[:1], scratch=SCRATCH[:1], complete=False)
    assert ("(no interval from one pair, n = 1 paired replicates, at commit 0123456789) (the study is not complete "
            "yet): inconclusive") in study_headline(one)
    row = [line for line in study_table(one).splitlines() if line.startswith("| `pretrained − scratch`")][0]
    assert "| – | – | – |" in row and study_table(one).endswith("Not complete: 2 runs so far.")


def test_a_record_without_the_compared_arms_names_what_is_missing() -> None:
    record = _record()
    record["differences"] = []
    with pytest.raises(KeyError, match="pretrained − scratch"):
        study_headline(record)


def test_the_mean_score_names_the_tasks_it_averaged_and_the_sequence_part_declares_au_and_expr() -> None:
    runs = [{"experiment": f"{arm}-r{r}", "arm": arm, "replicate": r, "draw": None, "seed": None, "params": {},
             "metrics": {"au.score": au, "expr.score": expr, "va.score": 0.3, "mean_score": (au + expr + 0.3) / 3,
                         "au_expr_score": (au + expr) / 2}}
            for r in range(len(PRETRAINED)) for arm, (au, expr) in (("sequence-pretrained", PRETRAINED[r]),
                                                                   ("sequence-scratch", SCRATCH[r]))]
    record = {**_record(), "runs": runs, "plan": {"references": ["sequence-scratch"]},
              **summarize_runs(runs, ["sequence-scratch"], statistic="au_expr_score", margin=0.02)}
    text = study_table(record)
    assert "the statistic `au_expr_score` (mean of the AU and EXPR scores)" in text
    assert "| mean of the AU and EXPR scores (declared) |" in text
    assert "mean of the AU, EXPR and VA scores" in text   # the exploratory mean score, VA in it
    mean, low, high = _paired_mean_and_interval()
    row = [line for line in text.splitlines() if line.startswith("| `sequence-pretrained − sequence-scratch`")][0]
    assert f"| {low:+.3f} to {high:+.3f} |" in row
    assert sequence_headline(record) == (
        f"*Through the whole pipeline, the sequence model's face-frame score (mean of the AU and EXPR scores) changed "
        f"by {mean:+.3f} (95 % CI {low:+.3f} to {high:+.3f}, n = 4 paired replicates, at commit 0123456789): "
        "difference, declared the same way ([docs/results.md](docs/results.md#the-sequence-model)).*")
    with pytest.raises(KeyError, match="sequence-pretrained − sequence-scratch"):
        sequence_headline(_record())   # the visual part's record has no sequence arms
