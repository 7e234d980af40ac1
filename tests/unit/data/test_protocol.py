"""The leakage-free validation protocol: validation subjects whose video trains the other task are excluded."""

from __future__ import annotations

from pipeline.data.manifest import SubjectRecord
from pipeline.data.protocol import apply_protocol, train_videos


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
    assert excluded == {"au": 10, "expr": 20}


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
    assert excluded == {"au": 10, "expr": 20}


def test_bp4d_never_takes_part() -> None:
    records = [
        _rec("bp4d_F001_T1", "train", None, video="x", source="bp4d"),
        _rec("x", None, "validation"),
    ]
    assert train_videos(records, "au") == set()
    out, excluded = apply_protocol(records)
    assert out[1].expr_split == "validation" and excluded == {"au": 0, "expr": 0}


def test_no_leak_leaves_records_untouched() -> None:
    records = [_rec("a", "train", "train"), _rec("b", "validation", "validation")]
    out, excluded = apply_protocol(records)
    assert out == records and excluded == {"au": 0, "expr": 0}
