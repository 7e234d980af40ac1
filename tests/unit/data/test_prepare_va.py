"""prepare with VA_Set files on the hand-built root: labels, manifest, report, protocol, errors.

VA files added to ``build_affwild2``'s four videos (see tests/_media.py for their AU/EXPR splits):

    vidA        VA validation, 10 lines, frame 3 unlabelled  -> excluded: vidA trains AU
    vidB        VA train, 12 lines                           (vidB's AU validation was excluded already)
    vidC_left   VA train, 10 lines                           -> vidC_right's AU validation is excluded too
    vidD        VA validation, 7 lines (padded by one)       kept
    vidE        VA validation only (a video no other task annotates), 6 frames
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _media import build_affwild2, write_crops, write_video

from pipeline.data.annotations import VA_HEADER
from pipeline.data.labels_store import read_all_labels
from pipeline.data.manifest import read_manifest
from pipeline.data.prepare import PrepareConfig, PrepareError, prepare_dataset

VA_TRAIN = "annotations/VA_Set/Train_Set"
VA_VAL = "annotations/VA_Set/Validation_Set"


def write_va(path: Path, rows: np.ndarray | list[list[float]], header: str = VA_HEADER) -> Path:
    """Write a VA_Set file; NaN rows are written as the file's -5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join("-5" if np.isnan(v) else f"{v:.3f}" for v in row) for row in np.asarray(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def va_rows(n: int, seed: int, unlabelled: tuple[int, ...] = ()) -> np.ndarray:
    """Random (valence, arousal) rows in [-1, 1], rounded as the files hold them, NaN where unlabelled."""
    rows = np.round(np.random.default_rng(seed).uniform(-1, 1, size=(n, 2)), 3)
    rows[list(unlabelled)] = np.nan
    return rows


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_affwild2(tmp_path_factory.mktemp("source") / "affwild2")
    write_va(root / VA_VAL / "vidA.txt", va_rows(10, 11, unlabelled=(3,)))
    write_va(root / VA_TRAIN / "vidB.txt", va_rows(12, 12))
    write_va(root / VA_TRAIN / "vidC_left.txt", va_rows(10, 13))
    write_va(root / VA_VAL / "vidD.txt", va_rows(7, 14))
    write_video(root / "videos/batch1/vidE.mp4", 6, fps=25)
    write_va(root / VA_VAL / "vidE.txt", va_rows(6, 15))
    write_crops(root / "cropped_aligned/vidE", 6, missing=(5,))
    return root


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset that a test may damage."""
    return Path(shutil.copytree(source, tmp_path / "affwild2"))


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "prepared"
    prepare_dataset(source, out, PrepareConfig(frame_tolerance=2))
    return out


def test_va_labels_are_stored_aligned_with_nan_for_unlabelled(prepared: Path) -> None:
    labels = read_all_labels(prepared / "labels.h5")
    a = labels["vidA"]
    assert a.va.dtype == np.float32 and a.va.shape == (10, 2)
    np.testing.assert_allclose(a.va, va_rows(10, 11, unlabelled=(3,)), atol=1e-6)
    d = labels["vidD"].va
    assert d.shape == (8, 2) and np.isnan(d[7]).all() and not np.isnan(d[:7]).any()   # padded by one frame
    assert np.isnan(labels["vidC_right"].va).all()                                       # no VA annotation


def test_manifest_va_split_counts_and_protocol(prepared: Path) -> None:
    manifest = read_manifest(prepared / "manifest.json")
    splits = {r.name: (r.au_split, r.expr_split, r.va_split) for r in manifest.subjects}
    assert splits == {
        "vidA": ("train", "excluded", "excluded"),
        "vidB": ("excluded", "train", "train"),
        "vidC_left": ("train", None, "train"),
        "vidC_right": ("excluded", None, None),
        "vidD": ("validation", "validation", "validation"),
        "vidE": (None, None, "validation"),
    }
    assert {r.name: r.n_va_labelled for r in manifest.subjects} == {
        "vidA": 9, "vidB": 12, "vidC_left": 10, "vidC_right": 0, "vidD": 7, "vidE": 6,
    }
    assert manifest.excluded_frames == {"au": 20, "expr": 8, "va": 9}
    assert [r.name for r in manifest.in_split("va", "validation")] == ["vidD", "vidE"]


def test_report_counts_va_and_says_what_the_protocol_removed(prepared: Path) -> None:
    report = json.loads((prepared / "report.json").read_text())
    assert report["splits"]["va"]["validation"] == {
        "subjects": 2, "videos": 2, "frames": 14, "labelled": 13, "labelled_with_face": 12,
    }
    assert report["splits"]["va"]["excluded"]["labelled"] == 9
    assert report["protocol"]["excluded_subjects"] == {"au": ["vidB", "vidC_right"], "expr": ["vidA"], "va": ["vidA"]}
    removed = {(e["subject"], e["task"]): (e["frames"], e["trained_in"]) for e in report["protocol"]["exclusions"]}
    assert removed == {
        ("vidA", "expr"): (8, ["au"]),
        ("vidA", "va"): (9, ["au"]),
        ("vidB", "au"): (10, ["expr", "va"]),
        ("vidC_right", "au"): (10, ["va"]),
    }
    (delta,) = [d for d in report["alignment"]["padded_or_trimmed"] if d["task"] == "va"]
    assert (delta["subject"], delta["lines"], delta["frames"], delta["delta"]) == ("vidD", 7, 8, -1)


def _set_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("line", "text", "expected"),
    [
        (4, "0.5,1.2", r"VA_Set/Validation_Set/vidD\.txt: line 4: valence and arousal must be .*found '1\.2'"),
        (1, "valence,arousal,extra", r"vidD\.txt: line 1: wrong header 'valence,arousal,extra'"),
        (3, "0.5", r"vidD\.txt: line 3: expected 2 comma-separated value\(s\), found 1"),
        (5, "0.5,high", r"vidD\.txt: line 5: .*found 'high'"),
    ],
)
def test_a_malformed_va_file_is_one_error_naming_file_and_line(
    root: Path, tmp_path: Path, line: int, text: str, expected: str
) -> None:
    _set_line(root / VA_VAL / "vidD.txt", line, text)
    with pytest.raises(PrepareError, match=expected) as caught:
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "p").exists()


def test_va_lines_beyond_the_tolerance_name_both_files(root: Path, tmp_path: Path) -> None:
    write_va(root / VA_VAL / "vidD.txt", va_rows(12, 14))
    expected = r"VA_Set/Validation_Set/vidD\.txt: 12 annotation lines but video .*vidD\.mp4 has 8"
    with pytest.raises(PrepareError, match=expected):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))


def test_skip_invalid_leaves_out_the_subject_with_a_bad_va_file(root: Path, tmp_path: Path) -> None:
    _set_line(root / VA_VAL / "vidE.txt", 3, "-5,0.2,0")
    manifest = prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2, skip_invalid=True))
    assert "vidE" not in manifest.names() and "vidD" in manifest.names()
    report = json.loads((tmp_path / "p/report.json").read_text())
    assert report["skipped_subjects"] == ["vidE"]
    (skipped,) = report["skipped"]
    assert "vidE.txt: line 3: expected 2" in skipped


def test_a_copy_without_va_set_reads_as_unlabelled(root: Path, tmp_path: Path) -> None:
    shutil.rmtree(root / "annotations/VA_Set")
    (root / "videos/batch1/vidE.mp4").unlink()
    manifest = prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))
    assert all(r.va_split is None and r.n_va_labelled == 0 for r in manifest.subjects)
    assert all(np.isnan(item.va).all() for item in read_all_labels(tmp_path / "p/labels.h5").values())
