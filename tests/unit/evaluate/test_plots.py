"""Evaluation plots: the confusion counts, and that each plot writes a real PNG of sensible size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluate.plots import (
    _agreement_codes,
    confusion_counts,
    plot_au_f1,
    plot_confusion,
    plot_timeline,
    plot_va_density,
    plot_va_timeline,
)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_confusion_counts_skip_unlabelled_frames():
    counts = confusion_counts(np.array([0, 0, 1, -1, 6]), np.array([0, 2, 1, 5, 6]))
    assert counts.shape == (7, 7) and counts.sum() == 4
    assert counts[0, 0] == 1 and counts[0, 2] == 1 and counts[1, 1] == 1 and counts[6, 6] == 1


def test_confusion_counts_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        confusion_counts(np.zeros(3, int), np.zeros(4, int))


def test_agreement_codes():
    au_true = np.array([[1, 1, 0, 0, -1, -1] * 2])
    au_pred = np.array([[1, 0, 1, 0, 1, 0] * 2])
    # true positive, missed, false positive, true negative, active unlabelled, inactive unlabelled
    assert _agreement_codes(au_true, au_pred).tolist() == [[3, 1, 2, 0, 5, 4] * 2]


def test_plots_write_pngs(tmp_path: Path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(-1, 7, 200)
    y_pred = rng.integers(0, 7, 200)
    assert _png_size(plot_confusion(y_true, y_pred, tmp_path / "cm.png", "visual")) == (750, 650)
    bars = plot_au_f1({"visual": rng.random(12), "sequence": rng.random(12)}, tmp_path / "au_f1.png")
    assert _png_size(bars)[0] >= 700
    n = 90
    au_true = rng.integers(-1, 2, (n, 12))
    timeline = plot_timeline(
        "video1", au_true, rng.integers(0, 2, (n, 12)), rng.integers(-1, 7, n),
        {"visual": rng.integers(0, 7, n), "sequence": rng.integers(0, 7, n)}, tmp_path / "t.png", fps=30.0,
    )
    assert _png_size(timeline) == (1200, 800)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["au_f1.png", "cm.png", "t.png"]


def test_plots_refuse_misshapen_inputs(tmp_path: Path):
    with pytest.raises(ValueError, match="expected 12 F1 values"):
        plot_au_f1({"visual": np.zeros(11)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="video9"):
        plot_timeline("video9", np.zeros((5, 12)), np.zeros((4, 12)), np.zeros(5), {}, tmp_path / "y.png")
    assert not list(tmp_path.iterdir())


def test_timeline_without_truth_draws_probabilities_and_gaps(tmp_path: Path):
    rng = np.random.default_rng(1)
    n = 60
    au_prob = rng.random((n, 12))
    expr = rng.integers(0, 7, n).astype(float)
    present = np.ones(n, bool)
    present[20:30] = False
    au_prob[~present], expr[~present] = np.nan, np.nan
    path = plot_timeline("clip face 0", None, au_prob, None, {"sequence": expr}, tmp_path / "p.png", fps=25.0,
                         face_present=present)
    assert _png_size(path) == (1200, 600)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    # the AU heat map shows the "no prediction" grey where the face was absent
    assert (np.abs(pixels.astype(int) - [0xD9, 0xD9, 0xD9]).sum(axis=2) == 0).sum() > 100
    with pytest.raises(ValueError, match="true expressions"):
        plot_timeline("clip", None, au_prob, np.zeros(n - 1), {}, tmp_path / "q.png")


def test_va_plots_write_pngs(tmp_path: Path):
    rng = np.random.default_rng(2)
    n = 80
    va_true = rng.uniform(-1, 1, (n, 2))
    va_true[:5] = np.nan                                   # unlabelled: a gap in the true line
    present = np.ones(n, bool)
    present[40:50] = False
    timeline = plot_va_timeline("video2", va_true, {v: rng.uniform(-1, 1, (n, 2)) for v in ("visual", "sequence")},
                                tmp_path / "va_t.png", fps=30.0, face_present=present)
    assert _png_size(timeline) == (1200, 550)
    density = plot_va_density(va_true[5:], rng.uniform(-1, 1, (n - 5, 2)), tmp_path / "va_d.png", "sequence")
    assert _png_size(density) == (1000, 480)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["va_d.png", "va_t.png"]


def test_va_plots_refuse_misshapen_inputs(tmp_path: Path):
    with pytest.raises(ValueError, match=r"video9: VA labels must be \(N, 2\)"):
        plot_va_timeline("video9", np.zeros((5, 3)), {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"video9: fusion VA predictions must be \(5, 2\)"):
        plot_va_timeline("video9", np.zeros((5, 2)), {"fusion": np.zeros((4, 2))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        plot_va_density(np.zeros((5, 2)), np.zeros((6, 2)), tmp_path / "y.png", "sequence")
    with pytest.raises(ValueError, match="no labelled frames"):
        plot_va_density(np.zeros((0, 2)), np.zeros((0, 2)), tmp_path / "y.png", "sequence")
    assert not list(tmp_path.iterdir())
