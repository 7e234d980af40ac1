"""docs/make_figures.py: the frame it picks as "the model is right", and the crop that drops the letterbox."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
make_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_figures)


def _row(frame: int, expression: str, prob: float, face: str = "1") -> dict[str, str]:
    probs = {name: "0.0" for name in make_figures.EXPR_NAMES}
    probs[expression] = str(prob)
    return {"frame": str(frame), "face_id": "0" if face == "1" else "", "face_present": face,
            "expression": expression, **probs}


def test_the_right_frame_prefers_a_labelled_expression_other_than_neutral() -> None:
    labels = np.array([0, 0, 1, 1, -1, 2])
    rows = [_row(0, "Neutral", 0.9), _row(1, "Anger", 0.8), _row(2, "Anger", 0.4), _row(3, "Anger", 0.6),
            _row(4, "Anger", 0.99), _row(5, "Anger", 0.95, face="0")]
    assert make_figures.best_right_frame(rows, labels) == (3, 0.6, 1)
    assert make_figures.best_right_frame(rows[:2], labels) == (0, 0.9, 0)
    assert make_figures.best_right_frame([_row(1, "Anger", 0.8)], labels) is None


def test_the_crop_keeps_the_pictures_and_the_drawing_and_drops_the_black_bars() -> None:
    source = np.zeros((100, 200, 3), np.uint8)
    source[20:80, 50:120] = 200                      # the picture
    drawn = source.copy()
    drawn[30:60, 120:150] = 255                      # bars drawn beside it, on the black
    assert make_figures.content_box(source, drawn, margin=0) == (50, 20, 150, 80)


def test_each_au_cell_is_coloured_by_its_agreement_with_the_label() -> None:
    truth = np.array([[0, 1, 0, 1, -1, -1]])
    pred = np.array([[0, 0, 1, 1, 0, 1]])
    codes = make_figures.agreement(truth, pred)[0]
    assert [make_figures.AGREEMENT[c][0] for c in codes] == [
        "true negative", "missed", "false positive", "true positive", "unlabelled", "unlabelled, predicted active"]
