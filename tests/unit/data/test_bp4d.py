"""BP4D AU occurrence CSVs mapped onto the 12 ABAW AUs, and their crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _media import BP4D_HEADER, build_bp4d

from pipeline.data import bp4d
from pipeline.data.annotations import AnnotationError
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.manifest import SubjectRecord
from pipeline.labels import AU_NAMES


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "AU_OCC" / "M002_T3.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mapping_onto_abaw_aus(tmp_path: Path) -> None:
    root = build_bp4d(tmp_path)
    occ = bp4d.read_au_occ(root / "AU_OCC/F001_T1.csv")
    assert occ.stem == "F001_T1"
    assert occ.frames.tolist() == [100, 101, 102, 103, 104]
    assert occ.au.shape == (5, 12) and occ.au.dtype == np.int8
    col = {name: i for i, name in enumerate(AU_NAMES)}
    # row 100: 1,0,0,1,0,0,1,0,0,1,0,0 over AUs 1,2,4,6,7,10,12,14,15,17,23,24
    row = occ.au[0]
    assert (row[col["AU1"]], row[col["AU6"]], row[col["AU12"]], row[col["AU15"]]) == (1, 1, 1, 0)
    # AU17 (=1 on this row) is not an ABAW AU and must not leak into any column; AU25/26 are absent
    assert row.tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, -1, -1]
    assert (occ.au[:, col["AU25"]] == -1).all() and (occ.au[:, col["AU26"]] == -1).all()
    assert (occ.au[2] == -1).all()           # all 9s: not coded
    assert occ.au[4, col["AU4"]] == -1       # a single 9
    assert occ.au[4, col["AU2"]] == 1


def test_header_order_is_respected(tmp_path: Path) -> None:
    path = _csv(tmp_path, "0,26,25,1\n7,1,0,9\n")
    au = bp4d.read_au_occ(path).au
    col = {name: i for i, name in enumerate(AU_NAMES)}
    assert (au[0, col["AU26"]], au[0, col["AU25"]], au[0, col["AU1"]]) == (1, 0, -1)
    assert (np.delete(au[0], [col["AU26"], col["AU25"], col["AU1"]]) == -1).all()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"M002_T3\.csv: empty"),
        ("frame,1,2\n1,0,0\n", r"M002_T3\.csv: line 1: wrong header"),
        ("0,1,AU2\n1,0,0\n", r"M002_T3\.csv: line 1: wrong header"),
        ("0,1,1\n1,0,0\n", r"M002_T3\.csv: line 1: .*twice"),
        (f"{BP4D_HEADER}\n", r"M002_T3\.csv: .*no frame rows"),
        ("0,1,2\n1,0,0\n2,0\n", r"M002_T3\.csv: line 3: expected 3 values, found 2"),
        ("0,1,2\n1,0,0\n2,0,3\n", r"M002_T3\.csv: line 3: AU values must be 0, 1 or 9, found '3'"),
        ("0,1,2\n1,0,0\n1,0,0\n", r"M002_T3\.csv: line 3: frame 1 does not follow frame 1"),
        ("0,1,2\n-4,0,0\n", r"M002_T3\.csv: line 2: frame number"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(AnnotationError, match=pattern):
        bp4d.read_au_occ(_csv(tmp_path, text))


def test_every_bad_line_is_named_not_only_the_first(tmp_path: Path) -> None:
    text = "0,1,2\n1,0,0\n2,0\n3,0,7\nx,0,0\n4,1,1\n4,1,1\n"
    with pytest.raises(AnnotationError) as info:
        bp4d.read_au_occ(_csv(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"{tmp_path / 'AU_OCC' / 'M002_T3.csv'}: line 3: expected 3 values, found 2 in '2,0'; "
                       "line 4: AU values must be 0, 1 or 9, found '7'; line 5: frame number must be a "
                       "non-negative integer, found 'x'; line 7: frame 4 does not follow frame 4")


def test_a_file_bad_on_every_line_lists_the_first_ten_and_counts_the_rest(tmp_path: Path) -> None:
    text = "0,1,2\n" + "".join(f"{n},0,5\n" for n in range(1, 31))
    with pytest.raises(AnnotationError) as info:
        bp4d.read_au_occ(_csv(tmp_path, text))
    assert str(info.value).count("AU values must be") == 10 and str(info.value).endswith("and 20 more bad lines")


def test_crlf_and_trailing_spaces(tmp_path: Path) -> None:
    occ = bp4d.read_au_occ(_csv(tmp_path, "0,1,2 \r\n5,1,0 \r\n6,9,1\r\n\r\n"))
    assert occ.frames.tolist() == [5, 6]


def test_discovery_and_crops_follow_the_csv_frame_numbers(tmp_path: Path) -> None:
    root = build_bp4d(tmp_path / "BP4D")
    assert bp4d.find_au_occ(root) == [root / "AU_OCC/F001_T1.csv"]
    crops = bp4d.crops_dir(root, "F001_T1")
    assert bp4d.csv_for_crops_dir(crops) == root / "AU_OCC/F001_T1.csv"
    record = SubjectRecord(
        name=bp4d.subject_name("F001_T1"), video="bp4d_F001_T1", source="bp4d", crops_dir=str(crops), n_frames=5
    )
    paths = crop_paths(record)
    assert [p.name for p in paths] == ["00100.jpg", "00101.jpg", "00102.jpg", "00103.jpg", "00104.jpg"]
    assert present_mask(paths).tolist() == [True, True, False, True, True]
    stale = SubjectRecord(name="bp4d_F001_T1", video="x", source="bp4d", crops_dir=str(crops), n_frames=4)
    with pytest.raises(ValueError, match=r"F001_T1\.csv: 5 rows but the manifest says 4"):
        crop_paths(stale)


def test_missing_bp4d_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="AU_OCC/"):
        bp4d.find_au_occ(tmp_path)
    (tmp_path / "AU_OCC").mkdir()
    with pytest.raises(FileNotFoundError, match="no AU occurrence"):
        bp4d.find_au_occ(tmp_path)
