"""The held-out selection split: whole videos, disjoint from training and validation, seeded, shared."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.data.manifest import Manifest, SubjectRecord, read_manifest
from pipeline.labels import NUM_AUS, TASKS
from pipeline.train.selection import (
    SelectionConfig, calibrate_au, carve_selection, epoch_score, held_out_au, selection_split,
)
from pipeline.train.splits import task_splits


def _manifest(records: list[SubjectRecord]) -> Manifest:
    return Manifest("root", tuple(records))


def _records() -> list[SubjectRecord]:
    """Ten videos training both tasks (v3 with two faces), three AU-only, two EXPR-only, two
    validation videos and a BP4D subject."""
    records = [SubjectRecord(f"v{i}", f"v{i}", au_split="train", expr_split="train") for i in range(10) if i != 3]
    records += [SubjectRecord(f"v3_{side}", "v3", au_split="train", expr_split="train") for side in ("left", "right")]
    records += [SubjectRecord(f"a{i}", f"a{i}", au_split="train") for i in range(3)]
    records += [SubjectRecord(f"e{i}", f"e{i}", expr_split="train") for i in range(2)]
    records += [SubjectRecord(f"val{i}", f"val{i}", au_split="validation", expr_split="validation") for i in range(2)]
    records.append(SubjectRecord("F001_T1", "F001_T1", source="bp4d", au_split="train"))
    return records


def test_the_split_is_a_function_of_manifest_share_and_seed_only() -> None:
    records = _records()
    split = carve_selection(_manifest(records), 0.2, seed=3)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    again = carve_selection(_manifest(shuffled), 0.2, seed=3)
    assert again.videos == split.videos
    assert {t: sorted(n) for t, n in again.subjects.items()} == {t: sorted(n) for t, n in split.subjects.items()}
    draws = {carve_selection(_manifest(records), 0.2, seed).videos for seed in range(6)}
    assert len(draws) > 1   # the seed picks the videos


@pytest.mark.parametrize("seed", range(8))
def test_held_out_videos_are_whole_and_leave_training_and_validation_disjoint(seed: int) -> None:
    manifest = _manifest(_records())
    held = carve_selection(manifest, 0.2, seed)
    splits = task_splits(manifest, ("affwild2", "bp4d"), held)
    assert not splits.train["va"] and not held.subjects["va"]   # a task without training videos holds none out
    for task in ("au", "expr"):
        assert splits.selection[task], task                       # every task has a selection subject
        assert splits.train[task], task                           # and keeps training subjects
        assert not set(splits.selection[task]) & set(splits.train[task])
        assert not set(splits.selection[task]) & set(splits.validation[task])
        # a held-out video trains no task: its every subject is out of every task's training
        trained_videos = {manifest.by_name(n).video for t in TASKS for n in splits.train[t]}
        assert not trained_videos & set(held.videos)
    assert "F001_T1" in splits.train["au"] and "F001_T1" not in held.subjects["au"]   # BP4D always trains
    if "v3" in held.videos:
        assert {"v3_left", "v3_right"} <= set(held.subjects["au"])


def test_each_task_gets_about_its_share_of_its_training_videos() -> None:
    manifest = _manifest(_records())     # AU trains 13 videos, EXPR 12
    for seed in range(8):
        held = carve_selection(manifest, 0.2, seed)
        for task, quota in (("au", 3), ("expr", 2)):   # round(0.2 * 13), round(0.2 * 12)
            videos = {manifest.by_name(n).video for n in held.subjects[task]}
            assert quota <= len(videos) <= 5, (seed, task, videos)   # 5: both quotas together


def test_a_share_that_leaves_a_task_no_training_video_names_the_key() -> None:
    records = [SubjectRecord("v0", "v0", au_split="train", expr_split="train"),
               SubjectRecord("v1", "v1", expr_split="train"), SubjectRecord("v2", "v2", expr_split="train")]
    with pytest.raises(ValueError, match=r"selection\.share 0\.2 holds out every Aff-Wild2 training video of "
                                         r"the au task \(v0\); lower selection\.share or set selection\.mode"):
        carve_selection(_manifest(records), 0.2, seed=0)


def test_modes_other_than_holdout_hold_nothing_out_and_the_config_checks_its_values() -> None:
    manifest = _manifest(_records())
    for mode in ("validation", "last"):
        split = selection_split(manifest, SelectionConfig(mode=mode))
        assert split.videos == () and task_splits(manifest, ("affwild2",), split).selection_subjects() == []
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match=r"params\.yaml:selection\.share: must be in \(0, 1\)"):
            from_dict(SelectionConfig, {"share": share}, where="params.yaml:selection")
    with pytest.raises(ConfigError, match="selection.mode"):
        from_dict(SelectionConfig, {"mode": "best"}, where="params.yaml:selection")


def test_epoch_score_reads_the_mode_s_frame_set() -> None:
    validation = {"face_frames": {"score": 0.7}, "all_frames": {"score": 0.6}}
    selection = {"face_frames": {"score": 0.4}, "all_frames": {"score": 0.3}}
    assert epoch_score("holdout", validation, selection) == 0.4
    assert epoch_score("validation", validation, None) == 0.7
    assert epoch_score("last", validation, None) is None
    with pytest.raises(ValueError, match="no face_frames"):
        epoch_score("validation", {"face_frames": {"score": None}}, None)


def test_the_tiny_preset_works_with_the_default_share(tiny_prepared: Path) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    for seed in range(6):
        held = selection_split(manifest, SelectionConfig(seed=seed))
        splits = task_splits(manifest, ("affwild2",), held)
        for task in TASKS:
            assert splits.selection[task], (seed, task, held)
            # with three tasks, the second pass may take a video past another task's quota of one
            # to fill VA's: every task still keeps a training video
            assert len({manifest.by_name(n).video for n in splits.train[task]}) >= 1, (seed, task, held)


def _held_out_logits() -> tuple[np.ndarray, np.ndarray]:
    """Logits whose best per-AU cut (0.7 in probability) is far from 0.5, and their labels."""
    probs = np.tile(np.array([0.2, 0.6, 0.65, 0.8, 0.9])[:, None], (1, NUM_AUS))
    labels = np.tile(np.array([0, 0, 0, 1, 1], np.int8)[:, None], (1, NUM_AUS))
    return np.log(probs / (1 - probs)), labels


def test_au_thresholds_switch_picks_fixed_global_or_per_au() -> None:
    logits, labels = _held_out_logits()
    labels[:, 0] = [0, 0, 1, 1, 1]     # AU1 alone wants a lower cut (0.625): global and per-AU differ there
    per_au = calibrate_au(SelectionConfig(au_thresholds="per_au"), logits, labels)
    assert per_au.values[0] == pytest.approx(0.625) and per_au.values[1:] == pytest.approx((0.725,) * 11)
    assert per_au.source == "held-out selection split, face_frames: 5 AU frames"
    single = calibrate_au(SelectionConfig(au_thresholds="global"), logits, labels)
    assert single.strategy == "global" and single.values == pytest.approx((0.725,) * NUM_AUS)
    fixed = calibrate_au(SelectionConfig(au_thresholds="fixed"), logits, labels)
    assert fixed.values == (0.5,) * NUM_AUS and fixed.source == "selection.au_thresholds is fixed"
    assert from_dict(SelectionConfig, {"au_thresholds": "global"}).au_thresholds == "global"
    assert SelectionConfig().au_thresholds == "per_au"
    with pytest.raises(ConfigError, match="au_thresholds"):
        from_dict(SelectionConfig, {"au_thresholds": "best"}, where="params.yaml:selection")


@pytest.mark.parametrize("mode", ["validation", "last"])
def test_without_a_held_out_split_the_thresholds_stay_fixed(mode: str) -> None:
    # never chosen on the validation frames (which are reported) nor on the training frames
    logits, labels = _held_out_logits()
    found = calibrate_au(SelectionConfig(mode=mode, au_thresholds="per_au"), logits, labels)
    assert found.values == (0.5,) * NUM_AUS and found.strategy == "fixed"
    assert found.source == f"selection.mode {mode}: no held-out split to choose them on"


def test_held_out_au_takes_the_face_frames_of_the_named_subjects() -> None:
    logits = {name: (np.full((4, NUM_AUS), float(k)), np.zeros((4, 7))) for k, name in enumerate("abc")}
    faces = {"a": [True, False, True, True], "b": [False] * 4, "c": [True, True, False, False]}
    labels = {name: (np.full((4, NUM_AUS), k % 2, np.int8), np.zeros(4, np.int8), np.array(faces[name]))
              for k, name in enumerate("abc")}
    au, truth = held_out_au(logits, labels.__getitem__, ["a", "c"])
    assert au[:, 0].tolist() == [0, 0, 0, 2, 2] and truth[:, 0].tolist() == [0, 0, 0, 0, 0]
    assert held_out_au(logits, labels.__getitem__, [])[0].shape == (0, NUM_AUS)


def test_the_threshold_strategy_is_not_part_of_the_resume_key() -> None:
    assert SelectionConfig(au_thresholds="fixed").resume_key() == SelectionConfig().resume_key()
    assert SelectionConfig(seed=1).resume_key() != SelectionConfig().resume_key()
