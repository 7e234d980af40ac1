"""ABAW scores for Action Unit detection, expression classification and valence-arousal estimation.

ABAW2 (2021): AU score = 0.5 * mean per-AU binary F1 + 0.5 * element-wise accuracy;
EXPR score = 0.67 * macro F1 + 0.33 * accuracy.
ABAW3 and later score AU by the mean F1 alone and EXPR by macro F1 alone (``variant="abaw3"``).
Entries equal to ``-1`` in ``y_true`` are unlabelled and ignored.

The EXPR macro F1 averages over one of two class sets (``expr_classes``); they differ only on frames
where some expression occurs neither in the labels nor in the predictions:

- ``"all"``: the 7 classes, a class absent from both counting as F1 0 (scikit-learn's
  ``f1_score(average="macro", labels=range(7), zero_division=0)``);
- ``"present"``: the classes that occur in the labels or the predictions (scikit-learn's
  ``f1_score(average="macro")`` without ``labels=``, which the ABAW evaluation script calls).

VA score (every ABAW edition) = 0.5 * (CCC_valence + CCC_arousal), Lin's concordance correlation
coefficient ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population (1/N)
moments, as the ABAW organisers' evaluation code computes it (``np.std`` and ``np.mean``), over the
frames whose label is present (NaN = unlabelled). Where those formulas divide by zero:

- predictions that equal every label (one frame, or a constant signal predicted exactly): 1.0,
  Lin's ``1 - mean((x - y)^2) / (...)`` read at zero error;
- otherwise a constant prediction or constant labels give 0.0 (no covariance to agree with);
- no labelled frame: NaN, with ``frames`` 0 beside it, so an empty set is never mistaken for a
  score (0 would read as "no agreement" and pull an average down).

Example:
    >>> import numpy as np
    >>> y = np.array([[1, 0] * 6, [0, 1] * 6])
    >>> au_metrics(y, y)["score"]
    1.0
    >>> ccc([0.1, 0.5, float("nan"), -0.2], [0.1, 0.5, 0.9, -0.2])
    1.0
"""

from __future__ import annotations

import numpy as np

from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA, VA_NAMES, VA_RANGE

VARIANTS: tuple[str, ...] = ("abaw2", "abaw3")
EXPR_CLASS_SETS: tuple[str, ...] = ("all", "present")


def _binary_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def au_per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Return the binary F1 of each AU (12,), over its labelled entries (0 where undefined)."""
    y_true, y_pred = _check_au(y_true, y_pred)
    labelled = y_true >= 0
    pos_true = (y_true == 1) & labelled
    pos_pred = (y_pred == 1) & labelled
    tp = (pos_true & pos_pred).sum(axis=0)
    fp = (~pos_true & pos_pred & labelled).sum(axis=0)
    fn = (pos_true & ~pos_pred).sum(axis=0)
    return _binary_f1(tp, fp, fn).astype(float)


def au_metrics(y_true: np.ndarray, y_pred: np.ndarray, variant: str = "abaw2") -> dict[str, float]:
    """Return ``{"f1", "acc", "score"}`` for AU predictions (N, 12) of 0/1 against labels with -1."""
    _check_variant(variant)
    y_true, y_pred = _check_au(y_true, y_pred)
    labelled = y_true >= 0
    f1 = float(au_per_class_f1(y_true, y_pred).mean())
    n = int(labelled.sum())
    acc = float((y_true[labelled] == y_pred[labelled]).mean()) if n else 0.0
    score = 0.5 * f1 + 0.5 * acc if variant == "abaw2" else f1
    return {"f1": f1, "acc": acc, "score": float(score)}


def _expr_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positives, false positives and false negatives (7,) over labelled frames."""
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    classes = np.arange(NUM_EXPRS)
    tp = np.array([np.sum((t == c) & (p == c)) for c in classes])
    fp = np.array([np.sum((t != c) & (p == c)) for c in classes])
    fn = np.array([np.sum((t == c) & (p != c)) for c in classes])
    return tp, fp, fn


def expr_per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Return the F1 of each of the 7 expressions (7,), over labelled frames (0 where undefined)."""
    y_true, y_pred = _check_expr(y_true, y_pred)
    return _binary_f1(*_expr_counts(y_true, y_pred)).astype(float)


def expr_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: str = "all") -> float:
    """Mean expression F1 over the 7 classes (``"all"``) or those in the labels or predictions (``"present"``).

    >>> expr_macro_f1([0, 1, 1], [0, 1, 0], "present")   # classes 0 and 1 only: (2/3 + 2/3) / 2
    0.6666666666666666
    """
    if classes not in EXPR_CLASS_SETS:
        raise ValueError(f"expression F1 classes must be one of {EXPR_CLASS_SETS}, got {classes!r}")
    y_true, y_pred = _check_expr(y_true, y_pred)
    tp, fp, fn = _expr_counts(y_true, y_pred)
    per_class = _binary_f1(tp, fp, fn)
    # a class occurs in the labels or the predictions exactly when it has a TP, FP or FN
    chosen = per_class if classes == "all" else per_class[(tp + fp + fn) > 0]
    return float(chosen.mean()) if len(chosen) else 0.0


def expr_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, variant: str = "abaw2", classes: str = "all"
) -> dict[str, float]:
    """Return ``{"f1", "acc", "score"}`` for expression predictions (N,) against labels with -1.

    ``classes`` picks the class set of the macro F1 (``"all"`` or ``"present"``, see the module doc).
    """
    _check_variant(variant)
    f1 = expr_macro_f1(y_true, y_pred, classes)
    y_true, y_pred = _check_expr(y_true, y_pred)
    keep = y_true >= 0
    acc = float((y_true[keep] == y_pred[keep]).mean()) if keep.any() else 0.0
    score = 0.67 * f1 + 0.33 * acc if variant == "abaw2" else f1
    return {"f1": f1, "acc": acc, "score": float(score)}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"metric variant must be one of {VARIANTS}, got {variant!r}")


def _check_au(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 2 or y_true.shape[1] != NUM_AUS or y_true.shape != y_pred.shape:
        raise ValueError(f"AU arrays must both be (N, {NUM_AUS}); got {y_true.shape} and {y_pred.shape}")
    if not np.isin(y_true, (-1, 0, 1)).all():
        raise ValueError("AU labels must be -1, 0 or 1")
    if not np.isin(y_pred, (0, 1)).all():
        raise ValueError("AU predictions must be 0 or 1")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def _check_expr(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"expression arrays must both be (N,); got {y_true.shape} and {y_pred.shape}")
    for what, values in (("labels", y_true), ("predictions", y_pred)):
        # a float class index such as 2.7 or NaN would otherwise be truncated silently by astype
        if values.dtype.kind not in "biu" and not np.array_equal(values, np.round(values)):
            raise ValueError(f"expression {what} must be integer class indices")
    if ((y_true < -1) | (y_true >= NUM_EXPRS)).any():
        raise ValueError(f"expression labels must be -1 or in [0, {NUM_EXPRS})")
    if ((y_pred < 0) | (y_pred >= NUM_EXPRS)).any():
        raise ValueError(f"expression predictions must be in [0, {NUM_EXPRS})")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments) over the frames where ``y_true`` is not NaN.

    1.0 where the predictions equal every label, 0.0 for any other zero-variance case, NaN with no
    labelled frame (see the module doc).
    """
    y_true, y_pred = _check_va_pair(y_true, y_pred)
    keep = ~np.isnan(y_true)
    x, y = y_pred[keep], y_true[keep]
    if not len(x):
        return float("nan")
    if np.array_equal(x, y):
        return 1.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0   # exactly: a rounded mean of equal values would leave a 1e-33 covariance
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2.0 * cov / denom)   # denom > 0: both vary


def va_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Return ``{"ccc_valence", "ccc_arousal", "score", "frames_valence", "frames_arousal"}`` for (N, 2) arrays.

    Columns are (valence, arousal); NaN labels are unlabelled; ``score`` is the ABAW VA score
    0.5 * (CCC_V + CCC_A), NaN when a dimension has no labelled frame.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape[1] != NUM_VA or y_true.shape != y_pred.shape:
        raise ValueError(f"VA arrays must both be (N, {NUM_VA}); got {y_true.shape} and {y_pred.shape}")
    out: dict[str, float] = {}
    for k, name in enumerate(VA_NAMES):
        out[f"ccc_{name}"] = ccc(y_true[:, k], y_pred[:, k])
        out[f"frames_{name}"] = int((~np.isnan(y_true[:, k])).sum())
    out["score"] = 0.5 * (out["ccc_valence"] + out["ccc_arousal"])
    return out


def _check_va_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both 1-D float64 of one length; labels in [-1, 1] or NaN, predictions finite."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"CCC arrays must both be (N,); got {y_true.shape} and {y_pred.shape}")
    labelled = y_true[~np.isnan(y_true)]
    if ((labelled < VA_RANGE[0]) | (labelled > VA_RANGE[1])).any():
        bad = labelled[(labelled < VA_RANGE[0]) | (labelled > VA_RANGE[1])][0]
        raise ValueError(
            f"valence/arousal labels must be in [{VA_RANGE[0]:g}, {VA_RANGE[1]:g}] or NaN (unlabelled), found {bad:g}"
        )
    if not np.isfinite(y_pred).all():
        raise ValueError("valence/arousal predictions must be finite numbers")
    return y_true, y_pred
