"""ABAW submission files: format, round trip through our reader and the annotation reader, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.annotations import read_au_file, read_expr_file, read_va_file
from pipeline.evaluate.submission import (
    HEADERS,
    SubmissionError,
    format_task,
    read_submission,
    read_task_file,
    write_submission,
)
from pipeline.labels import AU_NAMES, EXPR_NAMES, VA_NAMES


@pytest.fixture
def predictions() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "au": {"video1": rng.integers(0, 2, (40, 12)), "video2_left": rng.integers(0, 2, (7, 12))},
        "expr": {"video1": rng.integers(0, 7, 40), "video3": rng.integers(0, 7, 1)},
        # already on the 3-decimal grid, so the round trip is exact
        "va": {"video1": np.round(rng.uniform(-1, 1, (40, 2)), 3), "video4_right": np.array([[-1.0, 1.0]])},
    }


def test_headers_are_the_abaw_headers():
    assert HEADERS["au"] == "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
    assert HEADERS["expr"] == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
    assert HEADERS["au"].split(",") == list(AU_NAMES) and HEADERS["expr"].split(",") == list(EXPR_NAMES)
    assert HEADERS["va"] == "valence,arousal" and HEADERS["va"].split(",") == list(VA_NAMES)


def test_format_has_header_then_one_line_per_frame():
    text = format_task("au", np.eye(12, dtype=int)[:3])
    lines = text.splitlines()
    assert lines[0] == HEADERS["au"] and len(lines) == 4
    assert lines[2] == "0,1,0,0,0,0,0,0,0,0,0,0"
    assert format_task("expr", np.array([6, 0])) == HEADERS["expr"] + "\n6\n0\n"


def test_va_lines_hold_three_decimals_in_range():
    # rounding to 3 decimals, -0.0 written as 0.000, the range's ends kept
    text = format_task("va", np.array([[0.12345, -0.6789], [-0.0001, 1.0], [-1.0, 0.5]], np.float32))
    assert text.splitlines() == ["valence,arousal", "0.123,-0.679", "0.000,1.000", "-1.000,0.500"]


def test_round_trip_through_reader_and_annotation_reader(tmp_path: Path, predictions):
    for task, per_subject in predictions.items():
        paths = write_submission(tmp_path, "sequence", task, per_subject)
        folder = {"au": "AU_Set", "expr": "EXPR_Set", "va": "VA_Set"}[task]
        assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == sorted(
            f"sequence/{folder}/{name}.txt" for name in per_subject
        )
        back = read_submission(tmp_path, "sequence", task)
        assert sorted(back) == sorted(per_subject)
        annotation_reader = {"au": read_au_file, "expr": read_expr_file, "va": read_va_file}[task]
        for name, pred in per_subject.items():
            np.testing.assert_allclose(back[name], pred, atol=1e-6)
            np.testing.assert_allclose(annotation_reader(tmp_path / "sequence" / folder / f"{name}.txt"), pred,
                                       atol=1e-6)


def test_no_temporary_files_are_left(tmp_path: Path, predictions):
    write_submission(tmp_path, "visual", "expr", predictions["expr"])
    assert sorted(p.name for p in (tmp_path / "visual" / "EXPR_Set").iterdir()) == ["video1.txt", "video3.txt"]


@pytest.mark.parametrize(
    "task, predictions, message",
    [
        ("au", np.zeros((3, 11), int), r"\(N, 12\)"),
        ("au", np.full((3, 12), 2), "0 or 1"),
        ("expr", np.array([0, 7]), r"\[0, 7\)"),
        ("expr", np.zeros((2, 1), int), r"\(N,\)"),
        ("expr", np.zeros(0, int), "no frames"),
        ("va", np.zeros(3), r"\(N, 2\)"),
        ("va", np.array([[0.0, 1.01]]), r"in \[-1, 1\]"),
        ("va", np.array([[0.0, np.nan]]), r"in \[-1, 1\]"),
        ("va", np.zeros((0, 2)), "no frames"),
        ("arousal", np.zeros((3, 2)), "task must be"),
    ],
)
def test_bad_predictions_are_refused(task, predictions, message):
    with pytest.raises(ValueError, match=message):
        format_task(task, predictions)


@pytest.mark.parametrize(
    "task, text, message",
    [
        ("au", "AU1,AU2\n0,1\n", ":1: header"),
        ("au", HEADERS["au"] + "\n" + ",".join(["0"] * 12) + "\n" + ",".join(["0"] * 11) + "\n", ":3: expected 12"),
        ("au", HEADERS["au"] + "\n" + ",".join(["-1"] * 12) + "\n", ":2: expected 12"),
        ("au", HEADERS["au"] + "\n" + "a," * 11 + "a\n", ":2: not integers"),
        ("au", HEADERS["au"] + "\n", "no prediction lines"),
        ("au", "", "<empty file>"),
        ("va", "valence\n0.1\n", ":1: header"),
        ("va", "valence,arousal\n0.1,0.2\n0.1\n", ":3: expected 2 values"),
        ("va", "valence,arousal\n0.1,-5\n", ":2: expected 2 values in \\[-1, 1\\]"),
        ("va", "valence,arousal\n0.1,nan\n", ":2: expected 2 values"),
        ("va", "valence,arousal\n0.1,x\n", ":2: not numbers"),
        ("va", "valence,arousal\n", "no prediction lines"),
    ],
)
def test_reader_names_file_and_line_of_bad_content(tmp_path: Path, task, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(SubmissionError, match=message) as info:
        read_task_file(path, task)
    assert str(path) in str(info.value)


def test_reader_refuses_missing_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_task_file(tmp_path / "missing.txt", "expr")
    with pytest.raises(FileNotFoundError, match="EXPR_Set"):
        read_submission(tmp_path, "visual", "expr")
