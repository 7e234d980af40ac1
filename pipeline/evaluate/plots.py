"""PNG plots of the evaluation: expression confusion matrices, per-AU F1 bars, per-video timelines
(AUs and expressions; valence and arousal), the valence-arousal density.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no global backend
state, no display needed) and written atomically.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cm.png"
    >>> plot_confusion(np.array([0, 1, 1, -1]), np.array([0, 1, 2, 3]), out, "visual").is_file()
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.fsio import atomic_path
from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS, NUM_EXPRS, NUM_VA, VA_NAMES, VA_RANGE

# Colours per variant, stable across plots so a variant looks the same everywhere.
VARIANT_COLOURS: dict[str, str] = {"visual": "#1f77b4", "fusion": "#ff7f0e", "sequence": "#2ca02c"}
_FALLBACK_COLOURS = ("#d62728", "#9467bd", "#8c564b", "#e377c2")
# -1 (unlabelled) light grey, 0 white, 1 dark blue.
_ACTIVATION_CMAP = ListedColormap(["#d9d9d9", "#ffffff", "#08306b"])
# Predicted AU cells coloured by their agreement with the truth (code = index).
_AGREEMENT: tuple[tuple[str, str], ...] = (
    ("true negative", "#ffffff"),
    ("missed (false negative)", "#fdae6b"),
    ("false positive", "#d62728"),
    ("true positive", "#08306b"),
    ("inactive, unlabelled", "#eeeeee"),
    ("active, unlabelled", "#6baed6"),
)
_AGREEMENT_CMAP = ListedColormap([colour for _, colour in _AGREEMENT])
# Predicted probabilities without a truth to compare with: white 0 to navy 1, grey where there is none.
_PROBABILITY_CMAP = LinearSegmentedColormap.from_list("probability", ["#ffffff", "#08306b"]).with_extremes(
    bad="#d9d9d9")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Return the (7, 7) count matrix (rows true, columns predicted) over labelled frames."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"expression arrays must both be (N,); got {y_true.shape} and {y_pred.shape}")
    keep = y_true >= 0
    counts = np.zeros((NUM_EXPRS, NUM_EXPRS), dtype=np.int64)
    np.add.at(counts, (y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)), 1)
    return counts


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, title: str) -> Path:
    """Write the row-normalised expression confusion matrix, each cell annotated with its count."""
    counts = confusion_counts(y_true, y_pred)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, np.maximum(totals, 1), dtype=np.float64)
    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(NUM_EXPRS):
        for j in range(NUM_EXPRS):
            colour = "white" if rates[i, j] > 0.6 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                    fontsize=8, color=colour)
    ticks = np.arange(NUM_EXPRS)
    ax.set_xticks(ticks, EXPR_NAMES, rotation=35, ha="right")
    ax.set_yticks(ticks, [f"{name} (n={int(n)})" for name, n in zip(EXPR_NAMES, totals[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Expression confusion, {title} (row-normalised, counts in brackets)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save(fig, path)


def plot_f1_bars(per_variant: Mapping[str, np.ndarray], class_names: tuple[str, ...], path: str | Path,
                 title: str) -> Path:
    """Write grouped bars of per-class F1, one bar per variant in each class group."""
    if not per_variant:
        raise ValueError("no variants to plot")
    for variant, values in per_variant.items():
        if np.shape(values) != (len(class_names),):
            raise ValueError(f"{variant}: expected {len(class_names)} F1 values, got {np.shape(values)}")
    fig = _figure(max(7.0, 0.75 * len(class_names) + 2.0), 4.5)
    ax = fig.add_subplot()
    n = len(per_variant)
    width = 0.8 / n
    x = np.arange(len(class_names))
    for k, (variant, values) in enumerate(per_variant.items()):
        values = np.asarray(values, dtype=float)
        ax.bar(x + (k - (n - 1) / 2) * width, values, width, color=_colour(variant, k),
               label=f"{variant} (mean {values.mean():.3f})")
    long_names = max(len(name) for name in class_names) > 5
    ax.set_xticks(x, class_names, rotation=30 if long_names else 0, ha="right" if long_names else "center")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_au_f1(per_variant: Mapping[str, np.ndarray], path: str | Path,
               title: str = "Per-AU F1 on the validation set") -> Path:
    """Write the per-AU F1 bars grouped by variant."""
    return plot_f1_bars(per_variant, AU_NAMES, path, title)


def plot_timeline(
    name: str,
    au_true: np.ndarray | None,
    au_pred: np.ndarray,
    expr_true: np.ndarray | None,
    expr_pred: Mapping[str, np.ndarray],
    path: str | Path,
    fps: float | None = None,
    au_variant: str = "sequence",
    face_present: np.ndarray | None = None,
) -> Path:
    """Write a timeline of one subject: AU activations and expressions over time, against the truth when given.

    ``au_pred`` (N, 12) from variant ``au_variant``: in {0, 1} when ``au_true`` (N, 12, in {-1, 0, 1}) is
    given, each cell then coloured by its agreement with the truth; without ``au_true``, probabilities
    in [0, 1] (NaN: no prediction, drawn grey). ``expr_pred`` maps each variant to its (N,) predicted
    classes (NaN: none); ``expr_true`` (N,) in {-1, 0..6}, when given, is drawn under them.
    ``face_present`` (N,) bool, when given, shades the stretches without a face.
    """
    n = len(au_pred)
    if au_true is not None and np.shape(au_true) != (n, NUM_AUS) or np.shape(au_pred) != (n, NUM_AUS):
        raise ValueError(f"{name}: AU arrays must be ({n}, {NUM_AUS}); got "
                         f"{'' if au_true is None else f'{np.shape(au_true)}, '}{np.shape(au_pred)}")
    if expr_true is not None and np.shape(expr_true) != (n,):
        raise ValueError(f"{name}: true expressions must be ({n},), got {np.shape(expr_true)}")
    for variant, pred in expr_pred.items():
        if np.shape(pred) != (n,):
            raise ValueError(f"{name}: {variant} expression predictions must be ({n},), got {np.shape(pred)}")
    scale = 1.0 / fps if fps else 1.0
    extent = (-0.5 * scale, (n - 0.5) * scale, NUM_AUS - 0.5, -0.5)
    fig = _figure(12.0, 8.0 if au_true is not None else 6.0)
    if au_true is not None:
        axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.0, 1.1]})
        _au_agreement_axes(axes[0], axes[1], np.asarray(au_true), np.asarray(au_pred), extent, au_variant)
    else:
        axes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.1]})
        _au_probability_axis(axes[0], np.asarray(au_pred, dtype=float), extent, au_variant)
    _expression_axis(axes[-1], expr_true, expr_pred, n, scale, face_present)
    axes[-1].set_xlabel("time (s)" if fps else "frame")
    axes[-1].grid(axis="x", alpha=0.3)
    versus = "predicted vs true" if au_true is not None or expr_true is not None else "predicted"
    fig.suptitle(f"{name}: {versus} over time", fontsize=11)
    return _save(fig, path)


def plot_va_timeline(
    name: str,
    va_true: np.ndarray,
    va_pred: Mapping[str, np.ndarray],
    path: str | Path,
    fps: float | None = None,
    face_present: np.ndarray | None = None,
) -> Path:
    """Write valence and arousal of one subject over time: the labels (NaN: unlabelled, a gap) as a wide
    grey line and each variant's (N, 2) prediction over them, one panel per dimension.

    ``face_present`` (N,) bool, when given, shades the stretches without a face.
    """
    n = len(va_true)
    if np.shape(va_true) != (n, NUM_VA):
        raise ValueError(f"{name}: VA labels must be (N, {NUM_VA}), got {np.shape(va_true)}")
    for variant, pred in va_pred.items():
        if np.shape(pred) != (n, NUM_VA):
            raise ValueError(f"{name}: {variant} VA predictions must be ({n}, {NUM_VA}), got {np.shape(pred)}")
    scale = 1.0 / fps if fps else 1.0
    t = np.arange(n) * scale
    fig = _figure(12.0, 5.5)
    axes = fig.subplots(NUM_VA, 1, sharex=True)
    for k, (ax, dimension) in enumerate(zip(axes, VA_NAMES)):
        if face_present is not None:
            for r, (first, stop) in enumerate(_runs(~np.asarray(face_present, bool))):
                ax.axvspan((first - 0.5) * scale, (stop - 0.5) * scale, color="#fee0d2", zorder=0,
                           label="no face" if r == 0 else None)
        ax.plot(t, np.asarray(va_true, float)[:, k], color="black", linewidth=3.0, alpha=0.35, label="true")
        for j, (variant, pred) in enumerate(va_pred.items()):
            ax.plot(t, np.asarray(pred, float)[:, k], linewidth=1.0, color=_colour(variant, j), label=variant)
        ax.set_ylim(VA_RANGE[0] - 0.05, VA_RANGE[1] + 0.05)
        ax.axhline(0.0, color="0.6", linewidth=0.5)
        ax.set_ylabel(dimension)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].set_title("gaps in the true line: unlabelled", fontsize=9, loc="left")
    axes[-1].set_xlabel("time (s)" if fps else "frame")
    fig.suptitle(f"{name}: valence and arousal, predicted vs true", fontsize=11)
    return _save(fig, path)


def plot_va_density(va_true: np.ndarray, va_pred: np.ndarray, path: str | Path, title: str,
                    bins: int = 40) -> Path:
    """Write the 2-D valence-arousal density of the labels beside that of ``title``'s predictions, both
    (M, 2) over the same labelled frames, on the [-1, 1] square."""
    va_true, va_pred = np.asarray(va_true, float), np.asarray(va_pred, float)
    if va_true.ndim != 2 or va_true.shape[1] != NUM_VA or va_true.shape != va_pred.shape:
        raise ValueError(f"VA arrays must both be (M, {NUM_VA}); got {va_true.shape} and {va_pred.shape}")
    if not len(va_true):
        raise ValueError("no labelled frames to plot")
    fig = _figure(10.0, 4.8)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    edges = np.linspace(VA_RANGE[0], VA_RANGE[1], bins + 1)
    for ax, values, label in ((axes[0], va_true, "labels"), (axes[1], va_pred, f"{title} predictions")):
        counts, _, _ = np.histogram2d(values[:, 0], values[:, 1], bins=(edges, edges))
        image = ax.imshow(np.ma.masked_equal(counts.T, 0), origin="lower", cmap="viridis", aspect="equal",
                          extent=(VA_RANGE[0], VA_RANGE[1], VA_RANGE[0], VA_RANGE[1]), interpolation="nearest")
        ax.set_title(f"{label} ({len(values)} frames)", fontsize=9)
        ax.set_xlabel(VA_NAMES[0])
        ax.axhline(0.0, color="0.6", linewidth=0.5)
        ax.axvline(0.0, color="0.6", linewidth=0.5)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="frames")
    axes[0].set_ylabel(VA_NAMES[1])
    fig.suptitle("Valence-arousal density on the validation frames with a face", fontsize=10)
    return _save(fig, path)


def _au_agreement_axes(truth_ax, pred_ax, au_true: np.ndarray, au_pred: np.ndarray,
                       extent: tuple[float, float, float, float], au_variant: str) -> None:
    """The true AU activations, then the predicted ones coloured by their agreement with the truth."""
    truth_ax.imshow(au_true.T, cmap=_ACTIVATION_CMAP, vmin=-1.5, vmax=1.5, aspect="auto",
                    interpolation="nearest", extent=extent)
    truth_ax.set_title("true AUs (navy: active, white: inactive, grey: unlabelled)", fontsize=9, loc="left")
    pred_ax.imshow(_agreement_codes(au_true, au_pred).T, cmap=_AGREEMENT_CMAP, vmin=-0.5,
                   vmax=len(_AGREEMENT) - 0.5, aspect="auto", interpolation="nearest", extent=extent)
    pred_ax.set_title(f"predicted AUs ({au_variant})", fontsize=9, loc="left")
    pred_ax.legend(handles=[Patch(facecolor=c, edgecolor="0.5", label=lab) for lab, c in _AGREEMENT],
                   fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in (truth_ax, pred_ax):
        ax.set_yticks(np.arange(NUM_AUS), AU_NAMES, fontsize=7)


def _au_probability_axis(ax, au_prob: np.ndarray, extent: tuple[float, float, float, float],
                         au_variant: str) -> None:
    """The predicted AU probabilities as a heat map (white 0 to navy 1, grey where there is none)."""
    image = ax.imshow(np.ma.masked_invalid(au_prob.T), cmap=_PROBABILITY_CMAP, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest", extent=extent)
    ax.set_title(f"AU probabilities ({au_variant}; grey: no prediction)", fontsize=9, loc="left")
    ax.set_yticks(np.arange(NUM_AUS), AU_NAMES, fontsize=7)
    ax.figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="probability")


def _expression_axis(ax, expr_true: np.ndarray | None, expr_pred: Mapping[str, np.ndarray], n: int, scale: float,
                     face_present: np.ndarray | None) -> None:
    """Expressions over time: the truth (when given) as a wide grey line, each variant's prediction over it."""
    t = np.arange(n) * scale
    if face_present is not None:
        for k, (first, stop) in enumerate(_runs(~np.asarray(face_present, bool))):
            ax.axvspan((first - 0.5) * scale, (stop - 0.5) * scale, color="#fee0d2", zorder=0,
                       label="no face" if k == 0 else None)
    if expr_true is not None:
        truth = np.where(np.asarray(expr_true) >= 0, expr_true, np.nan).astype(float)
        ax.step(t, truth, where="mid", color="black", linewidth=3.0, alpha=0.35, label="true")
    for k, (variant, pred) in enumerate(expr_pred.items()):
        # Small vertical offsets keep coinciding variants visible.
        offset = (k - (len(expr_pred) - 1) / 2) * 0.12
        ax.step(t, np.asarray(pred, dtype=float) + offset, where="mid", linewidth=1.0,
                color=_colour(variant, k), label=variant)
    ax.set_yticks(np.arange(NUM_EXPRS), EXPR_NAMES, fontsize=8)
    ax.set_ylim(-0.6, NUM_EXPRS - 0.4)
    ax.invert_yaxis()
    ax.set_title("expression (gaps in the true line: unlabelled)" if expr_true is not None
                 else "predicted expression (gaps: no prediction)", fontsize=9, loc="left")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _agreement_codes(au_true: np.ndarray, au_pred: np.ndarray) -> np.ndarray:
    """Code each predicted AU cell by its agreement with the truth (indices into ``_AGREEMENT``)."""
    labelled = au_true >= 0
    active = au_pred == 1
    coded = np.where(active, np.where(au_true == 1, 3, 2), np.where(au_true == 1, 1, 0))
    return np.where(labelled, coded, np.where(active, 5, 4))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` index ranges where ``mask`` is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _colour(variant: str, index: int) -> str:
    return VARIANT_COLOURS.get(variant, _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)])


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
