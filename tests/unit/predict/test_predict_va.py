"""predict's valence-arousal: the CSV columns, the overlay's disc, the AU ticks at the model's thresholds,
and the refusal of model files exported before VA."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from _predict_models import export_pre_va_sequence, export_sequence
from pipeline.au_thresholds import AuThresholds
from pipeline.labels import NUM_AUS
from pipeline.predict.overlay import FaceMark, draw_marks
from pipeline.predict.video import (CSV_COLUMNS, FacePrediction, _FollowedFace, _predict_faces, _VisualPass,
                                    check_va_output, load_models, write_csv)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_csv_holds_valence_and_arousal_after_the_expression(tmp_path: Path):
    frames = np.arange(3)
    face = FacePrediction(0, frames, np.full((3, 12), 0.3), np.eye(7)[[1, 2, 3]],
                          va=np.array([[0.12345, -0.98765], [-0.0001, 1.0], [-1.0, 0.5]]))
    faceless = FacePrediction(None, np.array([3]), np.full((1, 12), 0.3), np.eye(7)[[0]])     # no VA given
    out = write_csv(tmp_path / "clip.csv", np.arange(4) / 25.0, np.ones(4, bool), [face, faceless])
    rows = _rows(out)
    assert CSV_COLUMNS.index("valence") == CSV_COLUMNS.index("expression") + 1
    assert CSV_COLUMNS.index("arousal") == CSV_COLUMNS.index("valence") + 1
    assert [(r["valence"], r["arousal"]) for r in rows] == [
        ("0.123", "-0.988"), ("0.000", "1.000"), ("-1.000", "0.500"), ("", "")]
    with pytest.raises(ValueError, match="face 0: valence-arousal of shape"):
        write_csv(tmp_path / "bad.csv", np.arange(3) / 25.0, np.ones(3, bool),
                  [FacePrediction(0, frames, np.full((3, 12), 0.3), np.eye(7)[[1, 2, 3]], va=np.zeros((3, 3)))])
    assert not (tmp_path / "bad.csv").exists()


def _two_faces(n: int) -> _VisualPass:
    """Face 0 (embeddings all 1) in frames 0-4, face 1 (all 2) in frames 8-9; frames 5-7 have no face."""
    faces = {0: _FollowedFace(frames=list(range(5))), 1: _FollowedFace(frames=[8, 9])}
    for face_id, face in faces.items():
        face.embedding = np.full((len(face.frames), 512), face_id + 1, np.float16)
    return _VisualPass(np.arange(n) / 25.0, faces, 25.0, located=False)


def _va_of_embedding(visual, audio, face_present, audio_present, batch_size):
    """A stand-in for the sequence model: valence is a tenth of the frame's embedding, arousal minus that."""
    level = visual[:, 0].astype(np.float32) / 10
    n = len(level)
    return np.zeros((n, 12), np.float32), np.zeros((n, 7), np.float32), np.stack([level, -level], axis=1)


def test_every_row_carries_the_va_of_its_own_faces_run():
    n = 10
    predictions, _ = _predict_faces(_two_faces(n), _va_of_embedding, np.zeros((n, 512), np.float16),
                                    np.zeros(n, bool), 4)
    by_face = {p.face_id: p for p in predictions}
    np.testing.assert_allclose(by_face[0].va, np.tile([0.1, -0.1], (5, 1)), atol=1e-3)
    np.testing.assert_allclose(by_face[1].va, np.tile([0.2, -0.2], (2, 1)), atol=1e-3)
    # the faceless frames come from the most-seen face's run, which sees no face there
    assert by_face[None].frames.tolist() == [5, 6, 7]
    np.testing.assert_allclose(by_face[None].va, np.zeros((3, 2)))


def test_a_sequence_model_giving_va_of_the_wrong_shape_is_refused():
    n = 10

    def one_dimension(*args):
        au, expr, va = _va_of_embedding(*args)
        return au, expr, va[:, :1]

    with pytest.raises(ValueError, match=r"valence-arousal of shape \(10, 1\); expected \(10, 2\)"):
        _predict_faces(_two_faces(n), one_dimension, np.zeros((n, 512), np.float16), np.zeros(n, bool), 4)


def test_a_model_exported_before_va_is_refused_by_name(tmp_path: Path):
    old = export_pre_va_sequence(tmp_path / "old" / "sequence.onnx")
    with pytest.raises(ValueError) as refused:
        load_models(tmp_path / "visual.onnx", None, old, device="cpu")
    message = str(refused.value)
    assert message.startswith(f"{old}: no va_pred output") and "export it again (train-sequence)" in message
    assert "\n" not in message
    check_va_output(export_sequence(tmp_path / "new" / "sequence.onnx", "visual"), "train-sequence")
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="junk.onnx: not an ONNX model"):
        check_va_output(not_onnx, "train-sequence")


def _changed(image: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    return np.abs(drawn.astype(int) - image.astype(int)).sum(axis=2) > 0


def test_the_overlay_draws_a_va_disc_whose_dot_follows_the_values():
    image = np.zeros((360, 400, 3), np.uint8)
    box = (40.0, 40.0, 100.0, 100.0)
    mark = FaceMark(0, box, np.zeros(12), np.eye(7)[0])
    without = draw_marks(image, [mark])
    drawn = {va: draw_marks(image, [FaceMark(0, box, np.zeros(12), np.eye(7)[0], np.array(va))])
             for va in ((0.8, 0.0), (-0.8, 0.0), (0.0, 0.8))}
    # the disc is drawn under the AU panel, which reaches no lower without VA
    panel_bottom = np.nonzero(_changed(image, without).any(axis=1))[0].max()
    disc = {va: _changed(without, d) & (np.arange(len(image))[:, None] > panel_bottom) for va, d in drawn.items()}
    assert all(mask.any() for mask in disc.values())
    # the dot: the face's colour (green), right for positive valence, left for negative, up for arousal
    green = {va: np.argwhere((d[..., 1] > 150) & (d[..., 0] < 100) & (d[..., 2] < 150) & disc[va])
             for va, d in drawn.items()}
    right, left, up = (green[va].mean(axis=0) for va in ((0.8, 0.0), (-0.8, 0.0), (0.0, 0.8)))
    assert right[1] > left[1] + 10 and up[0] < right[0] - 5
    with pytest.raises(ValueError, match="face 0: expected 2 valence-arousal values"):
        draw_marks(image, [FaceMark(0, box, np.zeros(12), np.eye(7)[0], np.zeros(3))])


def _tick_columns(threshold: float) -> np.ndarray:
    """The columns of the first AU row's bar where a drawing at ``threshold`` differs from one at 0.5."""
    image = np.zeros((240, 400, 3), np.uint8)
    mark = FaceMark(0, (40.0, 40.0, 100.0, 100.0), np.zeros(12), np.eye(7)[0])
    at = draw_marks(image, [mark], AuThresholds((threshold,) * NUM_AUS))
    at_half = draw_marks(image, [mark])
    row = 40 + 2 + (max(10, round(240 / 45)) + 2) // 2    # the middle of the first AU's row
    return np.flatnonzero(np.abs(at[row].astype(int) - at_half[row].astype(int)).sum(axis=1) > 0)


def test_the_au_ticks_sit_at_the_models_thresholds():
    assert _tick_columns(0.5).size == 0
    low, high = _tick_columns(0.25), _tick_columns(0.75)
    assert low.size and high.size
    # each drawing differs at its own tick and at 0.5's, which it lacks: the ticks are placed symmetrically
    half = np.intersect1d(low, high)
    own_low, own_high = np.setdiff1d(low, half), np.setdiff1d(high, half)
    assert own_low.size and own_high.size and half.size
    assert own_low.mean() < half.mean() < own_high.mean()
    assert abs((half.mean() - own_low.mean()) - (own_high.mean() - half.mean())) <= 1.0


def test_the_va_disc_stays_in_a_frame_too_short_for_it_under_the_bars():
    """A 256 x 256 frame (Aff-Wild2's crop size) leaves no room under the AU panel: the disc goes above it."""
    image = np.zeros((256, 256, 3), np.uint8)
    box = (60.0, 90.0, 100.0, 100.0)
    without = draw_marks(image, [FaceMark(0, box, np.zeros(12), np.eye(7)[0])])
    with_va = draw_marks(image, [FaceMark(0, box, np.zeros(12), np.eye(7)[0], np.array((0.5, 0.5)))])
    rows = np.nonzero(_changed(without, with_va).any(axis=1))[0]
    assert len(rows) and rows.max() < 90   # drawn, and above the panel that starts at the box's top
