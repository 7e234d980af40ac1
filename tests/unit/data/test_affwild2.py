"""Aff-Wild2 discovery: annotation files, video matching by stem, crops, alignment to the video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _media import AU_TRAIN, AU_VAL, EXPR_VAL, au_rows, write_au, write_expr, write_jpeg

from pipeline.data.affwild2 import (
    FrameCountError,
    MissingVideoError,
    align_to_video,
    crop_name,
    find_annotations,
    find_videos,
    group_by_subject,
    video_for,
    video_stem_candidates,
)
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.manifest import SubjectRecord


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_annotations_are_found_per_task_and_split(tmp_path: Path) -> None:
    write_au(tmp_path / AU_TRAIN / "v1.txt", au_rows(3, 0))
    write_au(tmp_path / AU_VAL / "v2_left.txt", au_rows(3, 0))
    write_expr(tmp_path / EXPR_VAL / "v1.txt", [0, 1, 2])
    _touch(tmp_path / AU_TRAIN / "notes.md")
    files = find_annotations(tmp_path)
    assert [(f.name, f.task, f.split) for f in files] == [
        ("v1", "au", "train"), ("v2_left", "au", "validation"), ("v1", "expr", "validation"),
    ]
    grouped = group_by_subject(files)
    assert list(grouped) == ["v1", "v2_left"]
    assert set(grouped["v1"]) == {"au", "expr"}


def test_subject_twice_in_one_task_is_an_error(tmp_path: Path) -> None:
    write_au(tmp_path / AU_TRAIN / "v1.txt", au_rows(3, 0))
    write_au(tmp_path / AU_VAL / "v1.txt", au_rows(3, 0))
    with pytest.raises(ValueError, match=r"annotated twice for au: .*Train_Set/v1\.txt and .*Validation_Set/v1\.txt"):
        group_by_subject(find_annotations(tmp_path))


def test_missing_annotation_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotations/"):
        find_annotations(tmp_path)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError, match="no annotation files"):
        find_annotations(tmp_path)


def test_videos_are_found_recursively_by_stem(tmp_path: Path) -> None:
    _touch(tmp_path / "batch1/v1.mp4")
    _touch(tmp_path / "videos/batch2/deep/v2.AVI")
    _touch(tmp_path / "batch1/readme.txt")
    _touch(tmp_path / "cropped_aligned/v1/clip.mp4")   # crops folders are never searched
    _touch(tmp_path / "annotations/old.mp4")
    _touch(tmp_path / "BP4D/x.mp4")
    videos = find_videos(tmp_path, exclude=[tmp_path / "BP4D"])
    assert videos == {"v1": [tmp_path / "batch1/v1.mp4"], "v2": [tmp_path / "videos/batch2/deep/v2.AVI"]}


def test_two_subject_names_share_the_video(tmp_path: Path) -> None:
    videos = {"v5": [tmp_path / "b/v5.mp4"], "v6_right": [tmp_path / "b/v6_right.mp4"]}
    annotation = tmp_path / "a.txt"
    assert video_for("v5_left", videos, annotation) == tmp_path / "b/v5.mp4"
    assert video_for("v5_right", videos, annotation) == tmp_path / "b/v5.mp4"
    assert video_for("v5_main", videos, annotation) == tmp_path / "b/v5.mp4"
    assert video_for("v5", videos, annotation) == tmp_path / "b/v5.mp4"
    # an exact stem match wins over stripping the suffix
    assert video_for("v6_right", videos, annotation) == tmp_path / "b/v6_right.mp4"
    assert video_stem_candidates("_left") == ["_left"]


def test_annotation_without_video_names_the_annotation(tmp_path: Path) -> None:
    annotation = tmp_path / "annotations/AU_Set/Train_Set/v9_left.txt"
    pattern = r"v9_left\.txt: no video found for subject 'v9_left'.*v9\{\.mp4,\.avi\}"
    with pytest.raises(MissingVideoError, match=pattern):
        video_for("v9_left", {"v1": [tmp_path / "v1.mp4"]}, annotation)


def test_two_videos_with_one_stem_is_an_error(tmp_path: Path) -> None:
    videos = {"v1": [tmp_path / "b1/v1.mp4", tmp_path / "b2/v1.avi"]}
    with pytest.raises(ValueError, match=r"a\.txt: several videos have the stem 'v1'.*b1/v1\.mp4.*b2/v1\.avi"):
        video_for("v1", videos, tmp_path / "a.txt")


def test_alignment_pads_with_unlabelled_and_trims(tmp_path: Path) -> None:
    ann, vid = tmp_path / "a.txt", tmp_path / "v.mp4"
    labels = np.arange(8, dtype=np.int8)
    padded, delta = align_to_video(labels, 10, 2, ann, vid)
    assert delta == -2 and padded.tolist() == list(range(8)) + [-1, -1]
    trimmed, delta = align_to_video(labels, 7, 2, ann, vid)
    assert delta == 1 and trimmed.tolist() == list(range(7))
    same, delta = align_to_video(labels, 8, 0, ann, vid)
    assert delta == 0 and same is labels
    au = np.zeros((5, 12), dtype=np.int8)
    padded_au, _ = align_to_video(au, 6, 1, ann, vid)
    assert padded_au.shape == (6, 12) and (padded_au[5] == -1).all()


@pytest.mark.parametrize("n_frames", [5, 12])
def test_alignment_beyond_tolerance_names_the_video(tmp_path: Path, n_frames: int) -> None:
    pattern = r"a\.txt: 8 annotation lines but video .*v\.mp4 has \d+ frames.*tolerance of 2"
    with pytest.raises(FrameCountError, match=pattern):
        align_to_video(np.zeros(8, dtype=np.int8), n_frames, 2, tmp_path / "a.txt", tmp_path / "v.mp4")


def test_crop_names_and_face_mask(tmp_path: Path) -> None:
    assert crop_name(0) == "00001.jpg" and crop_name(99999) == "100000.jpg"
    crops = tmp_path / "cropped_aligned/v1"
    for i in (0, 1, 3):
        write_jpeg(crops / crop_name(i))
    _touch(crops / "5.jpg")  # not the 5-digit name of frame 4: ignored
    record = SubjectRecord(name="v1", video="v1", crops_dir=str(crops), n_frames=5)
    paths = crop_paths(record)
    assert paths[2] == crops / "00003.jpg"
    assert present_mask(paths).tolist() == [True, True, False, True, False]
    missing = SubjectRecord(name="v2", video="v2", crops_dir=str(tmp_path / "nothing"), n_frames=3)
    assert not present_mask(crop_paths(missing)).any()
