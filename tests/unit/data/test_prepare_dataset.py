"""prepare_dataset on a hand-built Aff-Wild2 + BP4D root: manifest, labels, report, protocol, errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _media import (
    AU_VAL,
    EXPR_TRAIN,
    EXPR_VAL,
    au_rows,
    build_affwild2,
    build_bp4d,
    cut_file,
    write_au,
    write_expr,
    write_synth_video,
)

from pipeline.data.annotations import read_au_file, read_expr_file
from pipeline.data.labels_store import read_all_labels
from pipeline.data.manifest import read_manifest
from pipeline.data.prepare import PrepareConfig, PrepareError, prepare_dataset
from pipeline.fsio import OUTPUT_MARKER


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("source")
    build_affwild2(base / "affwild2")
    build_bp4d(base / "affwild2" / "BP4D")
    return base / "affwild2"


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset that a test may damage."""
    return Path(shutil.copytree(source, tmp_path / "affwild2"))


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "prepared"
    prepare_dataset(source, out, PrepareConfig(frame_tolerance=2), bp4d_root=source / "BP4D")
    return out


def test_outputs_are_written(prepared: Path) -> None:
    assert sorted(p.name for p in prepared.iterdir()) == [OUTPUT_MARKER, "labels.h5", "manifest.json", "report.json"]


def test_manifest_records(prepared: Path, source: Path) -> None:
    manifest = read_manifest(prepared / "manifest.json")
    assert manifest.names() == ["vidA", "vidB", "vidC_left", "vidC_right", "vidD", "bp4d_F001_T1"]
    a = manifest.by_name("vidA")
    assert (a.video, a.n_frames, a.fps, a.has_audio, a.sample_rate) == ("vidA", 10, 25.0, True, 16000)
    assert a.video_path == str(source / "videos/batch1/vidA.mp4")
    assert a.crops_dir == str(source / "cropped_aligned/vidA")
    assert (a.n_au_labelled, a.n_expr_labelled, a.n_faces, a.frame_delta) == (9, 8, 9, -1)
    b = manifest.by_name("vidB")
    assert (b.n_frames, b.fps, b.has_audio, b.sample_rate) == (12, 30.0, False, None)
    left, right = manifest.by_name("vidC_left"), manifest.by_name("vidC_right")
    assert left.video == right.video == "vidC" and left.video_path == right.video_path
    assert left.n_frames == right.n_frames == 10 and right.n_faces == 9
    assert set(manifest.videos()) == {"vidA", "vidB", "vidC", "vidD"}


def test_protocol_splits_and_excluded_frames(prepared: Path) -> None:
    manifest = read_manifest(prepared / "manifest.json")
    splits = {r.name: (r.au_split, r.expr_split) for r in manifest.subjects}
    assert splits == {
        "vidA": ("train", "excluded"),
        "vidB": ("excluded", "train"),
        "vidC_left": ("train", None),
        "vidC_right": ("validation", None),
        "vidD": ("validation", "validation"),
        "bp4d_F001_T1": ("train", None),
    }
    assert manifest.excluded_frames == {"au": 10, "expr": 8, "va": 0}   # vidB: 12 - 2 AU rows; vidA: 9 - 1 EXPR
    assert [r.name for r in manifest.in_split("au", "validation")] == ["vidC_right", "vidD"]


def test_labels_are_aligned_to_the_video(prepared: Path, source: Path) -> None:
    labels = read_all_labels(prepared / "labels.h5")
    a = labels["vidA"]
    assert a.au.shape == (10, 12) and a.expr.shape == (10,)
    np.testing.assert_array_equal(a.au, read_au_file(source / "annotations/AU_Set/Train_Set/vidA.txt"))
    raw_expr = read_expr_file(source / "annotations/EXPR_Set/Validation_Set/vidA.txt")
    assert a.expr[:9].tolist() == raw_expr.tolist() and a.expr[9] == -1   # padded by one frame
    assert a.face_present.tolist() == [True, True, False] + [True] * 7
    assert (labels["vidC_left"].expr == -1).all()                       # no EXPR annotation
    assert labels["vidC_right"].face_present.tolist() == [False] + [True] * 9
    bp = labels["bp4d_F001_T1"]
    assert bp.au.shape == (5, 12) and (bp.expr == -1).all()
    assert bp.face_present.tolist() == [True, True, False, True, True]


def test_report(prepared: Path) -> None:
    report = json.loads((prepared / "report.json").read_text())
    assert report["subjects"] == 5 and report["videos"] == 4
    assert report["videos_without_audio"] == ["vidB"]
    assert report["fps"] == {"25.000": 4, "30.000": 1}
    assert report["protocol"]["excluded_frames"] == {"au": 10, "expr": 8, "va": 0}
    assert report["protocol"]["excluded_subjects"] == {"au": ["vidB"], "expr": ["vidA"], "va": []}
    assert report["splits"]["au"]["train"] == {
        "subjects": 2, "videos": 2, "frames": 20, "labelled": 19, "labelled_with_face": 18,
    }
    assert report["splits"]["expr"]["validation"]["subjects"] == 1
    (delta,) = report["alignment"]["padded_or_trimmed"]
    found = (delta["subject"], delta["task"], delta["lines"], delta["frames"], delta["delta"])
    assert found == ("vidA", "expr", 9, 10, -1)
    assert report["bp4d"] == {"subjects": 1, "frames": 5, "au_labelled": 4, "faces": 4}
    assert report["skipped"] == []


def test_without_bp4d(source: Path, tmp_path: Path) -> None:
    manifest = prepare_dataset(source, tmp_path / "p", PrepareConfig(frame_tolerance=1))
    assert all(r.source == "affwild2" for r in manifest.subjects)


def test_count_mismatch_beyond_tolerance_names_the_video(root: Path, tmp_path: Path) -> None:
    write_au(root / AU_VAL / "vidD.txt", au_rows(12, 0))
    with pytest.raises(PrepareError, match=r"vidD\.txt: 12 annotation lines but video .*vidD\.mp4 has 8 frames"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))


def test_frame_tolerance_zero_rejects_the_padded_file(root: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"EXPR_Set/Validation_Set/vidA\.txt: 9 annotation lines .*vidA\.mp4"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=0))


def test_annotation_without_video(root: Path, tmp_path: Path) -> None:
    write_expr(root / EXPR_TRAIN / "vidZ.txt", [0, 1, 2])
    with pytest.raises(PrepareError, match=r"EXPR_Set/Train_Set/vidZ\.txt: no video found for subject 'vidZ'"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig())


def test_corrupt_video_names_the_video(root: Path, tmp_path: Path) -> None:
    video = root / "videos/batch2/vidC.mp4"
    video.write_bytes(video.read_bytes()[:300])
    with pytest.raises(PrepareError, match=r"vidC\.mp4: cannot read video") as caught:
        prepare_dataset(root, tmp_path / "p", PrepareConfig())
    assert str(caught.value).count("cannot read video") == 1   # _left and _right share it: reported once


def test_all_problems_are_reported_together(root: Path, tmp_path: Path) -> None:
    (root / "videos/batch1/vidD.mp4").unlink()
    (root / AU_VAL / "vidB.txt").write_text("")
    pattern = r"^2 problem\(s\) in the dataset: .*vidB\.txt: empty.*; .*vidD\.txt: no video"
    with pytest.raises(PrepareError, match=pattern):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))


def test_bad_annotation_names_file_and_line(root: Path, tmp_path: Path) -> None:
    path = root / AU_VAL / "vidD.txt"
    lines = path.read_text().splitlines()
    lines[4] = "0,1,0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PrepareError, match=r"AU_Set/Validation_Set/vidD\.txt: line 5: expected 12"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig())


def test_failure_leaves_an_existing_output_untouched(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    (root / AU_VAL / "vidD.txt").write_text("")
    with pytest.raises(PrepareError, match=r"vidD\.txt: empty annotation file"):
        prepare_dataset(root, out, PrepareConfig())
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["affwild2", "p"]   # no temporary left behind


def test_skip_invalid_keeps_the_other_subjects(root: Path, tmp_path: Path) -> None:
    (root / "videos/batch1/vidD.mp4").write_bytes(b"\x00" * 100)
    manifest = prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2, skip_invalid=True))
    assert "vidD" not in manifest.names() and "vidA" in manifest.names()
    report = json.loads((tmp_path / "p/report.json").read_text())
    (skipped,) = report["skipped"]
    assert "vidD.mp4" in skipped


def test_header_check_finds_a_corrupt_crop(root: Path, tmp_path: Path) -> None:
    (root / "cropped_aligned/vidD/00004.jpg").write_bytes(b"not a jpeg")
    prepare_dataset(root, tmp_path / "ok", PrepareConfig(frame_tolerance=2))   # existence only: passes
    with pytest.raises(PrepareError, match=r"vidD/00004\.jpg: frame 3: not a readable JPEG"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2, check_crops="header"))


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ValueError, match="frame_tolerance"):
        PrepareConfig(frame_tolerance=-1)


def test_tiny_synthetic_dataset(tiny_prepared: Path) -> None:
    """The synthetic generator's tiny preset prepares, with every case the layout promises."""
    manifest = read_manifest(tiny_prepared / "manifest.json")
    labels = read_all_labels(tiny_prepared / "labels.h5")
    affwild = [r for r in manifest.subjects if r.source == "affwild2"]
    assert {r.name for r in manifest.subjects} == set(labels)
    for record in manifest.subjects:
        item = labels[record.name]
        assert item.n_frames == record.n_frames
        assert int(item.face_present.sum()) == record.n_faces
    for video, members in manifest.videos().items():
        assert len({r.n_frames for r in members}) == 1, video          # one frame count per video
    assert any(len(members) == 2 for members in manifest.videos().values())   # a two-subject video
    assert {round(r.fps) for r in affwild} >= {25, 30}
    assert any(not r.has_audio for r in affwild) and any(r.has_audio for r in affwild)
    assert any(r.au_split is None for r in affwild) and any(r.expr_split is None for r in affwild)
    assert any(r.n_faces < r.n_frames for r in affwild)                 # frames without crops
    assert any((labels[r.name].expr == -1).any() for r in affwild if r.expr_split)
    assert any(r.source == "bp4d" and r.au_split == "train" for r in manifest.subjects)
    # the protocol's promise: no validation video of one task is in the other task's training set
    for task, other in (("au", "expr"), ("expr", "au")):
        trained = {r.video for r in affwild if r.split(other) == "train"}
        assert not {r.video for r in affwild if r.split(task) == "validation"} & trained
    report = json.loads((tiny_prepared / "report.json").read_text())
    assert report["protocol"]["excluded_frames"] == manifest.excluded_frames


def _replace_lines(path: Path, changes: dict[int, str]) -> None:
    """Overwrite 1-based lines of a text file."""
    lines = path.read_text().splitlines()
    for number, text in changes.items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _damage_everything(root: Path) -> None:
    """Several faults in several files, some subjects with more than one bad file."""
    _replace_lines(root / AU_VAL / "vidD.txt", {3: "0,1,2,0,0,0,0,0,0,0,0,0", 6: "0,1"})
    _replace_lines(root / EXPR_VAL / "vidD.txt", {1: "Neutral,Anger"})
    for frame in (4, 7):
        (root / f"cropped_aligned/vidA/{frame + 1:05d}.jpg").write_bytes(b"not a jpeg")
    video = root / "videos/batch2/vidB.avi"
    write_synth_video(video, n_frames=12, fps=30, audio_share=None)
    cut_file(video, video, 0.9)
    write_expr(root / EXPR_TRAIN / "vidZ.txt", [0, 1, 2])


EVERY_FAULT = [
    r"AU_Set/Validation_Set/vidD\.txt: line 3: AU values must be 0, 1 or -1, found '2' .*; line 6: expected 12",
    r"EXPR_Set/Validation_Set/vidD\.txt: line 1: wrong header 'Neutral,Anger'",
    r"cropped_aligned/vidA/00005\.jpg: frame 4: not a readable JPEG",
    r"cropped_aligned/vidA/00008\.jpg: frame 7: not a readable JPEG",
    r"vidB\.avi: truncated video: the header declares 12 frames",
    r"EXPR_Set/Train_Set/vidZ\.txt: no video found for subject 'vidZ'",
]


def test_every_fault_of_every_file_is_listed(root: Path, tmp_path: Path) -> None:
    _damage_everything(root)
    cfg = PrepareConfig(frame_tolerance=2, check_crops="header")
    with pytest.raises(PrepareError, match=r"^5 problem\(s\) in the dataset: ") as caught:
        prepare_dataset(root, tmp_path / "p", cfg)
    message = str(caught.value)
    for pattern in EVERY_FAULT:
        assert re.search(pattern, message), pattern
    assert message.count("vidB.avi: truncated") == 1
    assert not (tmp_path / "p").exists()


def test_skip_invalid_reports_every_fault_in_the_report(root: Path, tmp_path: Path) -> None:
    _damage_everything(root)
    cfg = PrepareConfig(frame_tolerance=2, check_crops="header", skip_invalid=True)
    manifest = prepare_dataset(root, tmp_path / "p", cfg)
    assert manifest.names() == ["vidC_left", "vidC_right"]
    report = json.loads((tmp_path / "p/report.json").read_text())
    assert report["skipped_subjects"] == ["vidA", "vidB", "vidD", "vidZ"]
    assert len(report["skipped"]) == 5          # one entry per bad file, each naming its lines or frames
    for pattern in EVERY_FAULT:
        assert any(re.search(pattern, entry) for entry in report["skipped"]), pattern


def test_a_file_bad_on_every_line_lists_the_first_ten(root: Path, tmp_path: Path) -> None:
    path = root / AU_VAL / "vidD.txt"
    header = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n"
    path.write_text(header + "0\n" * 8)
    with pytest.raises(PrepareError) as caught:
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))
    assert [f"line {n}:" in str(caught.value) for n in range(2, 10)] == [True] * 8
    assert "more bad lines" not in str(caught.value)
    path.write_text(header + "0\n" * 13)
    with pytest.raises(PrepareError, match=r"vidD\.txt: line 2: .*; line 11: [^;]*; and 3 more bad lines$"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2))


def test_header_mode_refuses_a_truncated_video(root: Path, tmp_path: Path) -> None:
    video = root / "videos/batch2/vidB.avi"
    write_synth_video(video, n_frames=12, fps=30, audio_share=None)
    prepare_dataset(root, tmp_path / "whole", PrepareConfig(frame_tolerance=2, frame_count="header"))
    cut_file(video, video, 0.9)
    with pytest.raises(PrepareError, match=r"vidB\.avi: truncated video: the header declares 12 frames"):
        prepare_dataset(root, tmp_path / "p", PrepareConfig(frame_tolerance=2, frame_count="header"))


@pytest.fixture
def short_audio_root(root: Path) -> Path:
    """vidA's sound covers only the first half of its 10 frames (vidA has two subjects' worth of checks)."""
    write_synth_video(root / "videos/batch1/vidA.mp4", n_frames=10, fps=25, audio_share=0.5)
    return root


@pytest.mark.parametrize("mode", ["header", "demux"])
def test_short_audio_is_reported_with_a_warning(short_audio_root: Path, tmp_path: Path, mode: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = PrepareConfig(frame_tolerance=2, frame_count=mode)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.prepare"):
        prepare_dataset(short_audio_root, tmp_path / "p", cfg)
    report = json.loads((tmp_path / "p/report.json").read_text())
    (entry,) = report["short_audio"]
    assert entry["video"].endswith("videos/batch1/vidA.mp4") and entry["video_s"] == 0.4
    assert 0.3 < entry["missing_share"] <= 0.5     # half the sound (decoding rounds up to whole AAC frames)
    assert any("vidA.mp4: audio covers" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert report["config"]["audio_short_tolerance"] == 0.02


def test_short_audio_within_the_tolerance_is_not_reported(short_audio_root: Path, tmp_path: Path) -> None:
    prepare_dataset(short_audio_root, tmp_path / "p", PrepareConfig(frame_tolerance=2, audio_short_tolerance=0.6))
    assert json.loads((tmp_path / "p/report.json").read_text())["short_audio"] == []


def test_short_audio_is_a_fault_when_strict(short_audio_root: Path, tmp_path: Path) -> None:
    cfg = PrepareConfig(frame_tolerance=2, short_audio="error")
    with pytest.raises(PrepareError, match=r"vidA\.mp4: audio covers 0\.00\.\.0\.\d+ s of the 0\.40 s picture: \d+% "):
        prepare_dataset(short_audio_root, tmp_path / "p", cfg)
    manifest = prepare_dataset(short_audio_root, tmp_path / "p", dataclasses.replace(cfg, skip_invalid=True))
    assert "vidA" not in manifest.names() and "vidD" in manifest.names()


def test_audio_tolerance_is_checked() -> None:
    with pytest.raises(ValueError, match="audio_short_tolerance"):
        PrepareConfig(audio_short_tolerance=1.0)
