"""New real-face videos go through `crop` and then `prepare`, as an Aff-Wild2 copy would."""

from __future__ import annotations

import json
from pathlib import Path

from _media import AU_TRAIN, AU_VAL, au_rows, write_au
from click.testing import CliRunner

from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, grace_hopper, moving_photo, side_by_side_photos
from pipeline.data.synth.photo_video import write_frames_video
from stages.cli import main

N = 10
PARAMS = "prepare:\n  frame_tolerance: 0\n  frame_count: demux\n  check_crops: exists\n  skip_invalid: false\n"


def test_cropped_videos_are_prepared_with_their_faces(tmp_path: Path) -> None:
    root = tmp_path / "affwild2"
    detector = FaceDetector(DetectorConfig())
    photos = []
    for image in (astronaut(), grace_hopper()):
        face = detector.detect(image)[0]
        photos.append((image, tuple(face.landmarks.mean(axis=0)), face.box.w))
    solo, _ = moving_photo(photos[0][0], photos[0][1], n_frames=N, zoom=(1.1, 1.3))
    solo[3] = 0   # a frame without a face
    write_frames_video(root / "videos" / "solo.mp4", solo)
    write_frames_video(root / "videos" / "duo.mp4", side_by_side_photos(photos, n_frames=N))
    write_au(root / AU_TRAIN / "solo.txt", au_rows(N, 1))
    write_au(root / AU_TRAIN / "duo_left.txt", au_rows(N, 2))
    write_au(root / AU_VAL / "duo_right.txt", au_rows(N, 3))

    cropped = CliRunner().invoke(main, ["crop", str(root / "videos"), str(root / "cropped_aligned"),
                                        "--min-frames", "3"])
    assert cropped.exit_code == 0, cropped.output
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    prepared = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "prepared"), "--params", str(params),
                                         "--no-progress"])
    assert prepared.exit_code == 0, prepared.output
    subjects = {s["name"]: s for s in json.loads((tmp_path / "prepared" / "manifest.json").read_text())["subjects"]}
    assert sorted(subjects) == ["duo_left", "duo_right", "solo"]
    assert {name: (s["n_frames"], s["n_faces"]) for name, s in subjects.items()} == {
        "solo": (N, N - 1), "duo_left": (N, N), "duo_right": (N, N)}
    assert subjects["duo_left"]["video"] == subjects["duo_right"]["video"] == "duo"
