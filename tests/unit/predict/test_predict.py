"""predict end to end: tiny exported ONNX models on a video made from a real photograph."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from _predict_models import PredictModelPaths, build_predict_models, export_sequence
from pipeline.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from pipeline.faces.align import align_face
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, crossing_photos, grace_hopper
from pipeline.data.synth.photo_video import panned_frames, write_frames_video, write_photo_video
from pipeline.au_thresholds import AuThresholds
from pipeline.model_files.onnx_export import read_metadata, set_metadata
from pipeline.predict.video import CSV_COLUMNS, load_models, predict_video, predict_videos

# the columns docs/predict.md lists, in its order
DOCUMENTED_COLUMNS = (
    "frame,timestamp,face_id,confidence,x,y,w,h,lm0_x,lm0_y,lm1_x,lm1_y,lm2_x,lm2_y,lm3_x,lm3_y,lm4_x,lm4_y,"
    "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26,"
    "AU1_active,AU2_active,AU4_active,AU6_active,AU7_active,AU10_active,AU12_active,AU15_active,AU23_active,"
    "AU24_active,AU25_active,AU26_active,"
    "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,expression,valence,arousal,"
    "face_present,audio_present,low_confidence"
).split(",")

N_FRAMES, FPS = 20, 25


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> PredictModelPaths:
    return build_predict_models(tmp_path_factory.mktemp("predict-models"))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("predict-video") / "astronaut.mp4"
    return write_photo_video(path, skimage.data.astronaut(), n_frames=N_FRAMES, fps=FPS)


def _aligned_crop(frame: np.ndarray) -> np.ndarray:
    """The aligned crop of the one face of ``frame``, as ``crop`` writes it."""
    return align_face(frame, FaceDetector(DetectorConfig()).detect(frame)[0].landmarks)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _check_probabilities(rows: list[dict[str, str]]) -> None:
    au = np.array([[float(r[name]) for name in AU_NAMES] for r in rows])
    expr = np.array([[float(r[name]) for name in EXPR_NAMES] for r in rows])
    assert np.all((au >= 0) & (au <= 1)) and np.all((expr >= 0) & (expr <= 1))
    np.testing.assert_allclose(expr.sum(axis=1), 1.0, atol=2e-3)   # 4 decimals per column
    assert [r["expression"] for r in rows] == [EXPR_NAMES[i] for i in expr.argmax(axis=1)]
    # the sequence model's valence and arousal: tanh's range, 3 decimals, on every row
    va = np.array([[float(r[name]) for name in VA_NAMES] for r in rows])
    assert np.all((va >= -1) & (va <= 1))
    assert all(len(r[name].split(".")[1]) == 3 for r in rows for name in VA_NAMES)


def test_predict_video_with_the_detector(onnx_models, video, tmp_path: Path):
    out = tmp_path / "out" / "astronaut.csv"
    summary = predict_video(video, out, onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    assert (summary.frames, summary.faces, summary.audio_frames) == (N_FRAMES, N_FRAMES, N_FRAMES)
    columns, rows = _read(out)
    assert columns == DOCUMENTED_COLUMNS and tuple(columns) == CSV_COLUMNS
    assert len(rows) == N_FRAMES
    assert all(r["face_id"] == "0" and 0 < float(r["confidence"]) for r in rows)
    _check_landmarks_in_box(rows)
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES))
    np.testing.assert_allclose([float(r["timestamp"]) for r in rows], np.arange(N_FRAMES) / FPS, atol=1e-3)
    assert all(r["face_present"] == "1" and r["audio_present"] == "1" and r["low_confidence"] == "0" for r in rows)
    _check_probabilities(rows)
    assert sorted(p.name for p in out.parent.iterdir()) == ["astronaut.csv"]


def _check_landmarks_in_box(rows: list[dict[str, str]]) -> None:
    for r in rows:
        x, y, w, h = (float(r[k]) for k in ("x", "y", "w", "h"))
        assert w > 0 and h > 0, r
        for k in range(5):
            assert x <= float(r[f"lm{k}_x"]) <= x + w and y <= float(r[f"lm{k}_y"]) <= y + h, (k, r)


def test_predict_writes_a_row_per_frame_per_face(onnx_models, tmp_path: Path):
    detector = FaceDetector(DetectorConfig())
    photos = []
    for image in (astronaut(), grace_hopper()):
        face = detector.detect(image)[0]
        photos.append((image, tuple(face.landmarks.mean(axis=0)), face.box.w))
    # Grace Hopper passes in front of the astronaut, who is hidden for part of the video
    frames, _ = crossing_photos(photos, n_frames=30)
    video = write_frames_video(tmp_path / "two.mp4", frames, fps=FPS, audio_hz=None)
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    summary = predict_video(video, tmp_path / "two.csv", models=models)
    assert summary.frames == summary.faces == 30 and summary.face_ids == 2
    columns, rows = _read(tmp_path / "two.csv")
    assert columns == DOCUMENTED_COLUMNS
    frames_of: dict[str, list[int]] = {}
    for r in rows:
        frames_of.setdefault(r["face_id"], []).append(int(r["frame"]))
    assert sorted(frames_of) == ["0", "1"]
    assert frames_of["1"] == list(range(30)) or frames_of["0"] == list(range(30))   # Grace Hopper, in every frame
    assert 0 < min(len(f) for f in frames_of.values()) < 30                         # the astronaut, hidden a while
    assert all(len(set(f)) == len(f) for f in frames_of.values())                   # one row per frame per face
    assert [int(r["frame"]) for r in rows] == sorted(int(r["frame"]) for r in rows)
    _check_landmarks_in_box(rows)
    _check_probabilities(rows)
    # each face is predicted from its own crops: the two faces' rows differ on a shared frame
    both = sorted(set(frames_of["0"]) & set(frames_of["1"]))
    pair = [r for r in rows if int(r["frame"]) == both[0]]
    assert [pair[0][n] for n in AU_NAMES] != [pair[1][n] for n in AU_NAMES]


def test_predict_video_with_a_crops_folder(onnx_models, video, tmp_path: Path):
    crops = tmp_path / "crops"
    crops.mkdir()
    frames = panned_frames(skimage.data.astronaut(), N_FRAMES, shift=2)
    for i in range(N_FRAMES):
        if i not in (3, 4, 11):   # missing crops: frames without a face
            Image.fromarray(_aligned_crop(frames[i])).save(crops / f"{i + 1:05d}.jpg")
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    summary = predict_video(video, tmp_path / "a.csv", crops_dir=crops, models=models)
    assert summary.faces == N_FRAMES - 3
    _, rows = _read(tmp_path / "a.csv")
    assert [i for i, r in enumerate(rows) if r["face_present"] == "0"] == [3, 4, 11]
    assert [i for i, r in enumerate(rows) if r["face_id"] == ""] == [3, 4, 11]   # every frame has a row
    assert all(r["face_id"] == "0" and r["x"] == r["lm0_x"] == r["confidence"] == "" for r in rows if r["face_id"])
    _check_probabilities(rows)   # frames without a face are predicted too


def test_visual_only_sequence_model_needs_no_audio_model(onnx_models, video, tmp_path: Path):
    sequence = export_sequence(tmp_path / "sequence.onnx", modalities="visual")
    models = load_models(onnx_models.visual, None, sequence, device="cpu")
    assert models.audio is None and models.sequence.modalities == "visual"
    summary = predict_video(video, tmp_path / "v.csv", models=models)
    assert summary.frames == N_FRAMES and summary.audio_frames == 0
    rows = _read(tmp_path / "v.csv")[1]
    assert all(r["audio_present"] == "0" for r in rows)   # the video has sound, but the model does not use it
    _check_probabilities(rows)


def test_frames_with_neither_face_nor_audio_are_marked_low_confidence(onnx_models, tmp_path: Path):
    silent = write_photo_video(tmp_path / "silent.mp4", skimage.data.astronaut(), n_frames=8, fps=FPS, audio_hz=None)
    crops = tmp_path / "crops"
    crops.mkdir()
    frames = panned_frames(skimage.data.astronaut(), 8, shift=2)
    for i in (0, 1, 2, 5, 6):                  # frames 3, 4 and 7 have no face
        Image.fromarray(_aligned_crop(frames[i])).save(crops / f"{i + 1:05d}.jpg")
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    summary = predict_video(silent, tmp_path / "s.csv", crops_dir=crops, models=models)
    assert (summary.faces, summary.audio_frames, summary.low_confidence) == (5, 0, 3)
    rows = _read(tmp_path / "s.csv")[1]
    assert [i for i, r in enumerate(rows) if r["low_confidence"] == "1"] == [3, 4, 7]
    assert all(r["audio_present"] == "0" for r in rows)
    _check_probabilities(rows)                 # still predicted, from the neighbouring frames


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_still_image_is_refused_by_name(onnx_models, video, tmp_path: Path, suffix: str):
    photo = tmp_path / f"photo.{suffix}"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    done, failed = predict_videos([photo, video], tmp_path / "out", models)
    assert [Path(s.video).name for s in done] == ["astronaut.mp4"]
    assert str(photo) in failed[str(photo)] and "still image" in failed[str(photo)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.csv"]


def test_audio_model_is_required_when_the_sequence_model_uses_audio(onnx_models):
    with pytest.raises(ValueError, match="give tdnn.onnx"):
        load_models(onnx_models.visual, None, onnx_models.sequence, device="cpu")


def test_a_bad_video_is_reported_and_the_others_complete(onnx_models, video, tmp_path: Path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    silent = write_photo_video(tmp_path / "silent.mp4", skimage.data.astronaut(), n_frames=6, audio_hz=None)
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    out = tmp_path / "out"
    done, failed = predict_videos([broken, video, silent, tmp_path / "missing.mp4"], out, models)
    assert [Path(s.video).name for s in done] == ["astronaut.mp4", "silent.mp4"]
    assert sorted(failed) == [str(broken), str(tmp_path / "missing.mp4")]
    assert str(broken) in failed[str(broken)] and "missing.mp4" in failed[str(tmp_path / "missing.mp4")]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.csv", "silent.csv"]
    assert done[1].audio_frames == 0 and len(_read(out / "silent.csv")[1]) == 6


def test_videos_with_the_same_stem_are_refused(onnx_models, video, tmp_path: Path):
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    with pytest.raises(ValueError, match="astronaut.csv"):
        predict_videos([video, tmp_path / "other" / "astronaut.mp4"], tmp_path / "out", models)


def test_missing_crops_folder_is_named(onnx_models, video, tmp_path: Path):
    models = load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")
    done, failed = predict_videos([video], tmp_path / "out", models, crops_root=tmp_path / "nocrops")
    assert not done and "nocrops" in failed[str(video)]


def _active(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[int(r[f"{name}_active"]) for name in AU_NAMES] for r in rows])


def test_au_decisions_use_the_thresholds_the_sequence_model_carries(onnx_models, video, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture):
    # A model without thresholds decides at 0.5 (rows whose 4-decimal probability sits at 0.5 are skipped).
    caplog.set_level(logging.INFO, logger="pipeline.predict.video")
    out = tmp_path / "fixed.csv"
    predict_video(video, out, crops_dir=None, models=load_models(onnx_models.visual, onnx_models.audio,
                                                                 onnx_models.sequence, device="cpu"))
    _, rows = _read(out)
    au = np.array([[float(r[name]) for name in AU_NAMES] for r in rows])
    clear = np.abs(au - 0.5) > 1e-4
    assert np.array_equal(_active(rows)[clear], (au > 0.5)[clear])
    assert f"at the thresholds of {onnx_models.sequence}: fixed 0.5 ({onnx_models.sequence} carries no thresholds)" \
        in caplog.text
    # The same model carrying thresholds: the first six AUs below every probability, the rest above.
    sequence = tmp_path / "sequence.onnx"
    shutil.copy(onnx_models.sequence, sequence)
    chosen = AuThresholds((1e-6,) * 6 + (0.999999,) * 6, "per_au", ("calibrated",) * 12, "test split")
    set_metadata(sequence, {**read_metadata(sequence), "au_thresholds": chosen.record()})
    caplog.clear()
    out = tmp_path / "own.csv"
    predict_video(video, out, models=load_models(onnx_models.visual, onnx_models.audio, sequence, device="cpu"))
    _, own = _read(out)
    assert [[r[name] for name in AU_NAMES] for r in own] == [[r[name] for name in AU_NAMES] for r in rows]
    assert _active(own)[:, :6].all() and not _active(own)[:, 6:].any()
    assert f"at the thresholds of {sequence}: per_au (test split): AU1 0.000" in caplog.text


def test_the_overlay_draws_the_csvs_va_and_ticks_the_aus_at_its_thresholds(onnx_models, video, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    from pipeline.predict import overlay as overlay_module

    sequence = tmp_path / "sequence.onnx"
    shutil.copy(onnx_models.sequence, sequence)
    chosen = AuThresholds((0.2,) * 6 + (0.8,) * 6, "per_au", ("calibrated",) * 12, "test split")
    set_metadata(sequence, {**read_metadata(sequence), "au_thresholds": chosen.record()})
    drawn: list[tuple[list, object]] = []
    draw_marks = overlay_module.draw_marks

    def recording(image, marks, au_thresholds=None):
        drawn.append((marks, au_thresholds))
        return draw_marks(image, marks, au_thresholds)

    monkeypatch.setattr(overlay_module, "draw_marks", recording)
    out = tmp_path / "clip.csv"
    predict_video(video, out, models=load_models(onnx_models.visual, onnx_models.audio, sequence, device="cpu"),
                  overlay=tmp_path / "clip.mp4")
    _, rows = _read(out)
    assert len(drawn) == len(rows) == N_FRAMES and all(thresholds == chosen for _, thresholds in drawn)
    drawn_va = np.array([marks[0].va for marks, _ in drawn], np.float64)
    np.testing.assert_allclose(drawn_va, [[float(r[name]) for name in VA_NAMES] for r in rows], atol=5e-4)
