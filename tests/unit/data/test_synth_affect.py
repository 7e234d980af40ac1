"""Synthetic valence and arousal: circumplex places, the voice, drift, files, and a stream of their own."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.data.annotations import read_au_file, read_expr_file, read_va_file
from pipeline.data.manifest import read_manifest
from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.data.synth.affect import (
    CIRCUMPLEX, circumplex_target, make_affect, ornstein_uhlenbeck, vocal_activity,
)
from pipeline.data.synth.audio import sample_voice, voice_tracks
from pipeline.data.synth.config import AudioConfig, LabelConfig
from pipeline.data.synth.plan import SPLIT_DIRS, plan_videos
from pipeline.labels import EXPR_NAMES

FPS = 25.0
QUIET = LabelConfig(va_drift_std=0.0, va_noise_std=0.0, va_voice_gain=0.0, unlabelled_rate=0.0)


def _episode(cls: int, n: int = 100, start: int = 20, stop: int = 80) -> tuple[np.ndarray, np.ndarray]:
    expr = np.zeros(n, dtype=np.int8)
    level = np.zeros(n, dtype=np.float32)
    expr[start:stop], level[start:stop] = cls, 1.0
    return expr, level


def test_each_class_sits_in_its_region_of_the_circumplex() -> None:
    v, a = zip(*(CIRCUMPLEX[name] for name in EXPR_NAMES))
    place = dict(zip(EXPR_NAMES, zip(v, a)))
    assert place["Neutral"] == (0.0, 0.0)
    assert place["Happiness"][0] > 0.3 and place["Happiness"][1] > 0
    assert place["Sadness"][0] < -0.3 and place["Sadness"][1] < 0
    assert place["Anger"][0] < 0 and place["Anger"][1] > 0.5
    assert place["Fear"][0] < 0 and place["Fear"][1] > 0.5
    assert abs(place["Surprise"][0]) < 0.3 and place["Surprise"][1] > 0.5
    assert place["Disgust"][0] < -0.3


@pytest.mark.parametrize("cls", range(len(EXPR_NAMES)))
def test_without_noise_the_apex_is_the_class_place_and_neutral_elsewhere(cls: int) -> None:
    expr, level = _episode(cls)
    va = make_affect(np.random.default_rng(0), expr, level, np.full(len(expr), np.nan), FPS, QUIET)
    np.testing.assert_allclose(va[30:70], np.tile(CIRCUMPLEX[EXPR_NAMES[cls]], (40, 1)), atol=1e-6)
    assert (va[:20] == 0).all() and (va[80:] == 0).all()


def test_the_target_follows_the_ramps_without_jumping_at_the_label_threshold() -> None:
    level = np.concatenate([np.linspace(0.01, 1.0, 30), np.ones(20), np.linspace(1.0, 0.01, 30)]).astype(np.float32)
    expr = np.where(level >= 0.3, EXPR_NAMES.index("Anger"), 0).astype(np.int8)   # labelled above 0.3 only
    target = circumplex_target(np.concatenate([[0], expr, [0]]), np.concatenate([[0], level, [0]]))
    steps = np.abs(np.diff(target[1:-1], axis=0)).max()
    assert steps < 0.05
    np.testing.assert_allclose(target[40], CIRCUMPLEX["Anger"])


def _activity(name: str, seed: int) -> float:
    n = 250
    expr, level = _episode(EXPR_NAMES.index(name), n=n, start=0, stop=n)
    rng = np.random.default_rng(seed)
    voice = sample_voice(rng)
    tracks = voice_tracks(rng, [(voice, expr, level)], FPS, AudioConfig())
    return float(np.nanmean(vocal_activity(tracks, voice, 0, n, FPS)))


def test_a_loud_high_voice_is_active_and_a_quiet_low_one_is_not() -> None:
    for seed in range(3):
        anger, neutral, sadness = (_activity(name, seed) for name in ("Anger", "Neutral", "Sadness"))
        assert anger > neutral + 0.5 > sadness + 1.0, (seed, anger, neutral, sadness)
        assert abs(neutral) < 0.3


def test_vocal_activity_is_nan_where_the_speaker_is_silent_and_follows_only_its_own_turns() -> None:
    n = 500
    expr, level = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float32)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        voices = [sample_voice(rng), sample_voice(rng)]
        tracks = voice_tracks(rng, [(voices[0], expr, level), (voices[1], expr, level)], FPS, AudioConfig())
        first, second = (vocal_activity(tracks, voices[k], k, n, FPS) for k in (0, 1))
        assert np.isfinite(first).any() and np.isfinite(second).any(), seed
        assert np.isnan(first).any() and np.isnan(second).any(), seed
        assert (np.isfinite(first) & np.isfinite(second)).mean() < 0.05, seed   # turns share only boundary frames


def test_arousal_rises_with_the_voice() -> None:
    expr, level = _episode(0)
    active = np.full(len(expr), 0.8)
    voiced = dataclasses.replace(QUIET, va_voice_gain=0.3)
    loud = make_affect(np.random.default_rng(0), expr, level, active, FPS, voiced)
    silent = make_affect(np.random.default_rng(0), expr, level, active, FPS, QUIET)
    assert (loud[:, 0] == silent[:, 0]).all()                               # valence does not hear the voice
    assert loud[-1, 1] == pytest.approx(0.3 * math.tanh(0.8), abs=1e-3)   # heard in full after 4 s


def test_the_drift_is_an_ornstein_uhlenbeck_process_of_the_given_std_and_time_constant() -> None:
    x = ornstein_uhlenbeck(np.random.default_rng(0), 200_000, 0.1, 2.0, FPS)
    assert x.std() == pytest.approx(0.1, rel=0.05)
    lag1 = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert lag1 == pytest.approx(math.exp(-1 / (FPS * 2.0)), abs=0.005)


def test_values_are_clipped_and_stretches_unlabelled() -> None:
    expr, level = _episode(EXPR_NAMES.index("Anger"), n=2000, start=0, stop=2000)
    cfg = LabelConfig(va_drift_std=1.0, unlabelled_rate=0.1)
    va = make_affect(np.random.default_rng(1), expr, level, np.full(2000, 2.0), FPS, cfg)
    labelled = va[~np.isnan(va).any(axis=1)]
    assert labelled.min() >= -1 and labelled.max() <= 1 and (labelled == 1).any()
    assert np.isnan(va).all(axis=1).mean() == pytest.approx(0.1, abs=0.01)
    assert (np.isnan(va[:, 0]) == np.isnan(va[:, 1])).all()


def test_bad_va_params_name_the_key() -> None:
    with pytest.raises(ConfigError, match="va_drift_s"):
        SynthConfig.from_params({"preset": "tiny", "labels": {"va_drift_s": 0}})
    with pytest.raises(ConfigError, match="va_voice_gain"):
        SynthConfig.from_params({"preset": "tiny", "labels": {"va_voice_gain": -0.1}})


def test_tiny_dataset_has_va_files_as_planned(tiny_root: Path) -> None:
    planned = {sp.name: sp.va_split for plan in plan_videos(SynthConfig.from_preset("tiny")) for sp in plan.subjects}
    found = {p.stem: split for split in ("train", "validation")
             for p in (tiny_root / "annotations/VA_Set" / SPLIT_DIRS[split]).glob("*.txt")}
    assert found == {name: split for name, split in planned.items() if split is not None}
    assert set(planned.values()) == {"train", "validation", None}
    unlabelled = 0
    for name, split in found.items():
        va = read_va_file(tiny_root / "annotations/VA_Set" / SPLIT_DIRS[split] / f"{name}.txt")
        others = [p for task in ("AU_Set", "EXPR_Set")
                  for p in (tiny_root / "annotations" / task).glob(f"*/{name}.txt")]
        assert others
        for other in others:
            n = len(read_au_file(other) if "AU_Set" in str(other) else read_expr_file(other))
            assert len(va) == n, other
        labelled = va[~np.isnan(va).any(axis=1)]
        assert labelled.min() >= -1 and labelled.max() <= 1 and labelled.std() > 0
        unlabelled += int(np.isnan(va).any(axis=1).sum())
    assert unlabelled > 0


def test_tiny_dataset_prepares_with_va(tiny_prepared: Path) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    by_role = {plan.role: plan.subjects[0].name for plan in plan_videos(SynthConfig.from_preset("tiny"))}
    assert manifest.by_name(by_role["au_train_expr_validation"]).va_split == "excluded"
    assert manifest.by_name(by_role["both_validation"]).va_split == "validation"
    assert manifest.by_name(by_role["au_only"]).va_split is None
    assert manifest.excluded_frames["va"] > 0
    # VA changes no AU or EXPR split: only the role the plan marks for both tasks is excluded there
    assert [r.name for r in manifest.subjects if "excluded" in (r.au_split, r.expr_split)] == [
        by_role["au_train_expr_validation"]
    ]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_va_draws_from_a_stream_of_its_own(tiny_root: Path, tmp_path: Path) -> None:
    """Other VA settings change the VA files and nothing else: no other file shares their random draws."""
    cfg = SynthConfig.from_params({"preset": "tiny", "labels": {"va_drift_std": 0.3, "va_noise_std": 0.1}})
    generate_dataset(tmp_path / "other", cfg)
    before, after = _digests(tiny_root), _digests(tmp_path / "other")
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    va = {name for name in before if name.startswith("annotations/VA_Set/")}
    assert va and changed == va | {"synth_summary.json"}
