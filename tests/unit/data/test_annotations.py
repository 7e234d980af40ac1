"""Aff-Wild2 annotation text files: parsing, tolerated quirks and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.annotations import (
    AU_HEADER,
    EXPR_HEADER,
    AnnotationError,
    read_annotation,
    read_au_file,
    read_expr_file,
)


def _write(tmp_path: Path, text: str, name: str = "video1.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_au_file_is_read_row_per_frame(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{AU_HEADER}\n" + "1,0,0,0,0,0,1,0,0,0,1,0\n" + "0,0,0,0,0,0,0,0,0,0,0,1\n")
    labels = read_au_file(path)
    assert labels.dtype == np.int8 and labels.shape == (2, 12)
    assert labels[0].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert labels[1, 11] == 1


def test_au_row_with_any_unlabelled_entry_becomes_unlabelled(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{AU_HEADER}\n1,0,-1,0,0,0,1,0,0,0,1,0\n0,0,0,0,0,0,0,0,0,0,0,0\n")
    labels = read_au_file(path)
    assert (labels[0] == -1).all()
    assert (labels[1] == 0).all()


def test_expr_file_values(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{EXPR_HEADER}\n0\n6\n-1\n3\n")
    assert read_expr_file(path).tolist() == [0, 6, -1, 3]
    assert read_annotation(path, "expr").dtype == np.int8


def test_crlf_trailing_spaces_bom_and_final_blank_lines_are_tolerated(tmp_path: Path) -> None:
    text = "\ufeff" + EXPR_HEADER + "  \r\n4 \r\n-1\t\r\n2\r\n\r\n\r\n"
    assert read_expr_file(_write(tmp_path, text)).tolist() == [4, -1, 2]
    au = "\ufeff" + AU_HEADER + "\r\n" + "1,0,0,0,0,0,0,0,0,0,0,1 \r\n"
    assert read_au_file(_write(tmp_path, au, "a.txt")).shape == (1, 12)


def test_wrong_header_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU27\n" + "0," * 11 + "0\n")
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 1: wrong header"):
        read_au_file(path)


def test_expr_header_in_au_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="line 1"):
        read_au_file(_write(tmp_path, f"{EXPR_HEADER}\n0\n"))


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    good = ",".join(["0"] * 12)
    path = _write(tmp_path, f"{AU_HEADER}\n{good}\n{good}\n" + ",".join(["0"] * 11) + "\n")
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 4: expected 12 .* found 11"):
        read_au_file(path)


def test_every_bad_line_is_listed(tmp_path: Path) -> None:
    good = ",".join(["0"] * 12)
    rows = [good, "0,1", good, ",".join(["0"] * 11 + ["2"]), good]
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 3: expected 12 .*found 2 in '0,1'; line 5: AU values"):
        read_au_file(_write(tmp_path, "\n".join([AU_HEADER] + rows) + "\n"))
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 1: wrong header .*; line 3: expression must be"):
        read_expr_file(_write(tmp_path, "Neutral\n1\n9\n2\n"))


def test_expr_line_with_two_values_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 3: expected 1 .* found 2"):
        read_expr_file(_write(tmp_path, f"{EXPR_HEADER}\n1\n1,2\n"))


@pytest.mark.parametrize("bad", ["2", "-2", "0.5", "x", ""])
def test_au_value_out_of_range_names_file_and_line(tmp_path: Path, bad: str) -> None:
    row = ",".join(["0"] * 11 + [bad])
    path = _write(tmp_path, f"{AU_HEADER}\n{','.join(['1'] * 12)}\n{row}\n")
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 3: AU values must be 0, 1 or -1"):
        read_au_file(path)


@pytest.mark.parametrize("bad", ["7", "-2", "1.0", "happy"])
def test_expr_value_out_of_range_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = _write(tmp_path, f"{EXPR_HEADER}\n0\n1\n{bad}\n")
    with pytest.raises(AnnotationError, match=r"video1\.txt: line 4: expression must be"):
        read_expr_file(path)


def test_blank_line_inside_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="line 3"):
        read_expr_file(_write(tmp_path, f"{EXPR_HEADER}\n0\n\n1\n"))


@pytest.mark.parametrize("text", ["", "\n\n", "\r\n"])
def test_empty_file_names_the_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(AnnotationError, match=r"video1\.txt: empty annotation file"):
        read_au_file(_write(tmp_path, text))


def test_header_without_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"video1\.txt: .*no frame lines"):
        read_expr_file(_write(tmp_path, EXPR_HEADER + "\n"))


def test_missing_file_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_au_file(tmp_path / "nope.txt")
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(AnnotationError, match=r"bin\.txt: not a UTF-8"):
        read_expr_file(path)


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task"):
        read_annotation(tmp_path / "x.txt", "valence")
