"""Aff-Wild2 VA_Set files: parsing, unlabelled frames, and one error naming the file and every bad line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.annotations import VA_HEADER, AnnotationError, read_annotation, read_va_file


def _write(tmp_path: Path, text: str, name: str = "video1.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_va_file_is_read_row_per_frame(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{VA_HEADER}\n0.25,-0.5\n-1,1\n0,0.0\n")
    labels = read_va_file(path)
    assert labels.dtype == np.float32 and labels.shape == (3, 2)
    assert labels.tolist() == [[0.25, -0.5], [-1.0, 1.0], [0.0, 0.0]]
    assert read_annotation(path, "va").shape == (3, 2)


def test_minus_five_is_unlabelled_for_the_whole_row(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{VA_HEADER}\n-5,-5\n0.1,-5\n-5.0,0.3\n0.2,0.4\n")
    labels = read_va_file(path)
    assert np.isnan(labels[:3]).all()
    assert labels[3].tolist() == pytest.approx([0.2, 0.4])


def test_tolerated_quirks_as_in_the_other_tasks(tmp_path: Path) -> None:
    text = "\ufeffvalence , arousal \r\n 0.5 , 0.25\r\n1e-1,-2.5e-1\r\n\r\n"
    np.testing.assert_allclose(read_va_file(_write(tmp_path, text)), [[0.5, 0.25], [0.1, -0.25]])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1.5,0", r"video1\.txt: line 3: valence and arousal must be numbers in \[-1, 1\] or -5, found '1\.5'"),
        ("0,-1.01", r"video1\.txt: line 3: .*found '-1\.01'"),
        ("-4,0", r"video1\.txt: line 3: .*found '-4'"),
        ("abc,0", r"video1\.txt: line 3: .*found 'abc'"),
        ("nan,0", r"video1\.txt: line 3: .*found 'nan'"),
        ("0,inf", r"video1\.txt: line 3: .*found 'inf'"),
        ("0.1", r"video1\.txt: line 3: expected 2 comma-separated value\(s\), found 1 in '0\.1'"),
        ("0.1,0.2,0.3", r"video1\.txt: line 3: expected 2 comma-separated value\(s\), found 3"),
        ("", r"video1\.txt: line 3: expected 2 comma-separated value\(s\), found 1 in ''"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path, f"{VA_HEADER}\n0,0\n{line}\n0,0\n")
    with pytest.raises(AnnotationError, match=expected):
        read_va_file(path)


def test_wrong_header_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "arousal,valence\n0,0\n")
    expected = r"video1\.txt: line 1: wrong header 'arousal,valence', expected 'valence,arousal'"
    with pytest.raises(AnnotationError, match=expected):
        read_va_file(path)


def test_every_bad_line_is_listed_in_one_error(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{VA_HEADER}\n0,0\n2,0\n0,0\n0,x\n")
    with pytest.raises(AnnotationError) as info:
        read_va_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert "line 3:" in message and "line 5:" in message and "line 4" not in message


def test_header_only_and_empty_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="header but no frame lines"):
        read_va_file(_write(tmp_path, f"{VA_HEADER}\n"))
    with pytest.raises(AnnotationError, match="empty annotation file"):
        read_va_file(_write(tmp_path, "", "e.txt"))
