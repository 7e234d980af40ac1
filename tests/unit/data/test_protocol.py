"""The leakage-free validation protocol: validation subjects whose video trains any task are excluded."""

from __future__ import annotations

from pipeline.data.manifest import SubjectRecord
from pipeline.data.protocol import apply_protocol, exclusions, train_videos


def _rec(name: str, au: str | None, expr: str | None, video: str | None = None, **kw: object) -> SubjectRecord:
    return SubjectRecord(
        name=name, video=video or name, au_split=au, expr_split=expr,
        n_au_labelled=10, n_expr_labelled=20, **kw,  # type: ignore[arg-type]
    )


def test_validation_subject_of_a_video_in_the_other_training_set_is_excluded() -> None:
    records = [
        _rec("a", "validation", "train"),        # AU validation leaks EXPR training -> AU excluded
        _rec("b", "train", "validation"),        # EXPR validation leaks AU training -> EXPR excluded
        _rec("c", "validation", "validation"),   # consistent validation video: kept
        _rec("d", "validation", None),           # AU-only validation: kept
        _rec("e", None, "train"),
    ]
    out, excluded = apply_protocol(records)
    splits = {r.name: (r.au_split, r.expr_split) for r in out}
    assert splits == {
        "a": ("excluded", "train"),
        "b": ("train", "excluded"),
        "c": ("validation", "validation"),
        "d": ("validation", None),
        "e": (None, "train"),
    }
    assert excluded == {"au": 10, "expr": 20, "va": 0}


def test_two_subject_videos_are_matched_by_their_shared_video() -> None:
    records = [
        _rec("v5_left", "validation", None, video="v5"),
        _rec("v5_right", None, "train", video="v5"),
        _rec("v6_left", "train", None, video="v6"),
        _rec("v6_right", None, "validation", video="v6"),
    ]
    out, excluded = apply_protocol(records)
    assert [r.au_split for r in out] == ["excluded", None, "train", None]
    assert [r.expr_split for r in out] == [None, "train", None, "excluded"]
    assert excluded == {"au": 10, "expr": 20, "va": 0}


def test_bp4d_never_takes_part() -> None:
    records = [
        _rec("bp4d_F001_T1", "train", None, video="x", source="bp4d"),
        _rec("x", None, "validation"),
    ]
    assert train_videos(records, "au") == set()
    out, excluded = apply_protocol(records)
    assert out[1].expr_split == "validation" and excluded == {"au": 0, "expr": 0, "va": 0}


def test_no_leak_leaves_records_untouched() -> None:
    records = [_rec("a", "train", "train"), _rec("b", "validation", "validation")]
    out, excluded = apply_protocol(records)
    assert out == records and excluded == {"au": 0, "expr": 0, "va": 0}


def _va(name: str, au: str | None, expr: str | None, va: str | None, video: str | None = None) -> SubjectRecord:
    return _rec(name, au, expr, video=video, va_split=va, n_va_labelled=30)


def test_va_takes_part_both_ways() -> None:
    records = [
        _va("a", "train", None, "validation"),          # VA validation on an AU training video: VA excluded
        _va("b", "validation", "validation", "train"),  # VA training removes both other validations
        _va("c", None, None, "validation"),             # VA-only validation video: kept
        _va("d", "validation", "validation", "validation"),
    ]
    out, excluded = apply_protocol(records)
    splits = {r.name: (r.au_split, r.expr_split, r.va_split) for r in out}
    assert splits == {
        "a": ("train", None, "excluded"),
        "b": ("excluded", "excluded", "train"),
        "c": (None, None, "validation"),
        "d": ("validation", "validation", "validation"),
    }
    assert excluded == {"au": 10, "expr": 20, "va": 30}


def test_a_validation_video_is_in_no_other_task_training_set_afterwards() -> None:
    splits = ("train", "validation", None)
    records = [
        _va(f"v{i}_{side}", au, expr, va, video=f"v{i}")
        for i, (au, expr, va) in enumerate((a, e, v) for a in splits for e in splits for v in splits)
        for side in ("left", "right")
    ]
    records += [_va("w_left", "validation", None, None, video="w"), _va("w_right", None, None, "train", video="w")]
    out, _ = apply_protocol(records)
    tasks = ("au", "expr", "va")
    for task in tasks:
        trained = {r.video for r in out for t in tasks if t != task and r.split(t) == "train"}
        validated = {r.video for r in out if r.split(task) == "validation"}
        assert trained and validated and not trained & validated, task
    assert next(r for r in out if r.name == "w_left").au_split == "excluded"


def test_exclusions_say_which_training_sets_removed_each_subject() -> None:
    out, _ = apply_protocol([_va("b", "validation", "train", "train"), _va("c", "train", "train", "train")])
    assert exclusions(out) == [
        {"subject": "b", "video": "b", "task": "au", "frames": 10, "trained_in": ["expr", "va"]},
    ]


def test_the_two_faces_of_a_video_may_sit_in_different_splits_of_one_task() -> None:
    out, excluded = apply_protocol([_va("v_left", None, None, "train", video="v"),
                                    _va("v_right", None, None, "validation", video="v")])
    assert [r.va_split for r in out] == ["train", "validation"] and excluded["va"] == 0


def test_a_manifest_without_va_keeps_the_two_task_protocol() -> None:
    records = [_rec("a", "validation", "train"), _rec("b", "validation", "validation")]
    out, excluded = apply_protocol(records)
    assert [r.au_split for r in out] == ["excluded", "validation"]
    assert [r.va_split for r in out] == [None, None]
    assert excluded == {"au": 10, "expr": 0, "va": 0}
