"""Masked multi-task losses: AU BCE with per-AU ``pos_weight``, expression focal loss, valence-arousal CCC.

Targets use ``-1`` (``pipeline.labels.UNLABELLED``) for entries without an annotation; they are
removed before the reduction, so a frame that carries only expression labels adds nothing to the AU
loss. Both losses compute in float32 whatever the logits' dtype (autocast-safe) and stay finite for
any finite logits, including batches without a single labelled entry (the result is then a zero that
is still connected to the logits, so ``backward()`` works and gives zero gradients).

Example:
    >>> import numpy as np, torch
    >>> labels = np.array([[1] * 12, [0] * 12, [-1] * 12], dtype=np.int8)
    >>> pos_weight = compute_pos_weight(labels, cap=10.0)
    >>> pos_weight.shape
    torch.Size([12])
    >>> au_bce_loss(torch.zeros(3, 12), torch.as_tensor(labels), pos_weight).shape
    torch.Size([])
    >>> expr_focal_loss(torch.zeros(2, 7), torch.tensor([3, -1]), gamma=2.0).item() > 0
    True
    >>> va = torch.tensor([[0.5, -0.2], [0.1, 0.3], [float("nan"), 0.0]])
    >>> round(va_ccc_loss(va.nan_to_num(), va).item(), 6)   # predictions equal to every label
    0.0

Valence-arousal targets use NaN for unlabelled entries instead of -1 (every value in [-1, 1] is a label).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA, UNLABELLED


def compute_pos_weight(au_labels: np.ndarray, cap: float) -> torch.Tensor:
    """Per-AU ``negatives / positives`` over labelled entries, capped at ``cap`` (12,) float32.

    An AU without any positive gets ``cap``. An AU without negatives gets 0 (its positives then
    carry no loss, which is what the ratio says; it does not occur in the ABAW data).
    """
    labels = np.asarray(au_labels)
    if labels.ndim != 2 or labels.shape[1] != NUM_AUS:
        raise ValueError(f"AU labels must have shape (N, {NUM_AUS}), got {labels.shape}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"pos_weight cap must be a positive finite number, got {cap}")
    bad = ~np.isin(labels, (UNLABELLED, 0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"AU labels must be -1, 0 or 1; found {labels[row, col]} at frame {row}, AU column {col}"
        )
    positives = (labels == 1).sum(axis=0).astype(np.float64)
    negatives = (labels == 0).sum(axis=0).astype(np.float64)
    ratio = np.divide(negatives, positives, out=np.full(NUM_AUS, cap), where=positives > 0)
    return torch.from_numpy(np.minimum(ratio, cap).astype(np.float32))


def subjects_pos_weight(au_labels: Sequence[np.ndarray], cap: float) -> torch.Tensor:
    """:func:`compute_pos_weight` over several subjects' (N_i, 12) AU labels (none: every AU gets ``cap``)."""
    return compute_pos_weight(np.concatenate(au_labels) if len(au_labels) else np.zeros((0, NUM_AUS), np.int8), cap)


def au_bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits (B,12) with per-AU ``pos_weight``, mean over the labelled (frame, AU) entries."""
    if logits.ndim != 2 or logits.shape[1] != NUM_AUS:
        raise ValueError(f"AU logits must have shape (B, {NUM_AUS}), got {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"AU targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    if pos_weight.shape != (NUM_AUS,):
        raise ValueError(f"pos_weight must have shape ({NUM_AUS},), got {tuple(pos_weight.shape)}")
    logits = logits.float()
    mask = targets != UNLABELLED
    # Unlabelled entries get target 0 so the elementwise loss is defined; they are masked out below.
    target = torch.where(mask, targets, torch.zeros_like(targets)).float()
    per_entry = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=pos_weight.to(device=logits.device, dtype=torch.float32),
        reduction="none",
    )
    return _masked_mean(per_entry, mask)


def expr_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` on (B,7) logits, mean over labelled frames."""
    if logits.ndim != 2 or logits.shape[1] != NUM_EXPRS:
        raise ValueError(f"expression logits must have shape (B, {NUM_EXPRS}), got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"expression targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"focal gamma must be a finite number >= 0, got {gamma}")
    if alpha is not None and alpha.shape != (NUM_EXPRS,):
        raise ValueError(f"focal alpha must have shape ({NUM_EXPRS},), got {tuple(alpha.shape)}")
    logits = logits.float()
    mask = targets != UNLABELLED
    index = torch.where(mask, targets, torch.zeros_like(targets)).long()
    log_pt = F.log_softmax(logits, dim=1).gather(1, index[:, None]).squeeze(1)
    # 1 - p_t via expm1 is exact near p_t = 1; the clamp keeps pow's gradient finite at 0 for gamma < 1.
    one_minus_pt = (-torch.expm1(log_pt)).clamp(min=1e-12)
    per_frame = -one_minus_pt.pow(gamma) * log_pt
    if alpha is not None:
        per_frame = per_frame * alpha.to(device=logits.device, dtype=torch.float32)[index]
    return _masked_mean(per_frame, mask)


def va_ccc_loss(predictions: torch.Tensor, targets: torch.Tensor, mse_weight: float = 0.0) -> torch.Tensor:
    """Mean over valence and arousal of ``1 - CCC`` on the batch, plus ``mse_weight`` times their MSE.

    ``predictions`` and ``targets`` are (..., 2) (frames or sequences of frames); NaN targets are
    unlabelled and left out. CCC is computed over the labelled entries of the whole batch with
    population moments, as the ABAW score computes it over a validation set; a dimension with fewer
    than two labelled entries adds nothing (a graph-connected 0). A small constant in the denominator
    keeps the gradient finite when predictions and labels are both constant.
    """
    if predictions.shape[-1:] != (NUM_VA,):
        raise ValueError(f"VA predictions must have shape (..., {NUM_VA}), got {tuple(predictions.shape)}")
    if targets.shape != predictions.shape:
        raise ValueError(f"VA targets shape {tuple(targets.shape)} != predictions shape {tuple(predictions.shape)}")
    if not (math.isfinite(mse_weight) and mse_weight >= 0):
        raise ValueError(f"VA mse_weight must be a finite number >= 0, got {mse_weight}")
    pred = predictions.float().reshape(-1, NUM_VA)
    target = targets.float().reshape(-1, NUM_VA)
    losses = []
    for k in range(NUM_VA):
        mask = ~torch.isnan(target[:, k])
        x = torch.where(mask, pred[:, k], torch.zeros_like(pred[:, k]))
        y = torch.where(mask, target[:, k], torch.zeros_like(pred[:, k]))
        n = mask.sum()
        if int(n) < 2:
            losses.append(x.sum() * 0.0)
            continue
        nf = n.to(x.dtype)
        mx, my = x.sum() / nf, y.sum() / nf
        dx, dy = torch.where(mask, x - mx, 0.0), torch.where(mask, y - my, 0.0)
        cov = (dx * dy).sum() / nf
        var_x, var_y = (dx * dx).sum() / nf, (dy * dy).sum() / nf
        ccc = 2.0 * cov / (var_x + var_y + (mx - my) ** 2 + 1e-8)
        loss = 1.0 - ccc
        if mse_weight:
            loss = loss + mse_weight * (torch.where(mask, x - y, 0.0) ** 2).sum() / nf
        losses.append(loss)
    return torch.stack(losses).mean()


def task_loss(
    task: str, logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor, gamma: float,
    alpha: torch.Tensor | None = None, va_mse_weight: float = 0.0,
) -> torch.Tensor:
    """The loss of the active ``task``: :func:`au_bce_loss` for ``au``, :func:`expr_focal_loss` for
    ``expr``, :func:`va_ccc_loss` for ``va`` (``logits`` are then the (..., 2) predictions)."""
    if task == "au":
        return au_bce_loss(logits, targets, pos_weight)
    if task == "expr":
        return expr_focal_loss(logits, targets, gamma, alpha)
    if task == "va":
        return va_ccc_loss(logits, targets, va_mse_weight)
    raise ValueError(f"unknown task {task!r}; expected 'au', 'expr' or 'va'")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; a graph-connected 0 when nothing is labelled."""
    # torch.where (not multiplication) so a non-finite value in a masked entry cannot leak as NaN.
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() / mask.sum().clamp(min=1).to(values.dtype)
