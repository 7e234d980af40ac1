"""AU BCE / expression focal losses: hand-computed values, masking, extreme inputs, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.train.losses import au_bce_loss, compute_pos_weight, expr_focal_loss


def _au_labels() -> np.ndarray:
    labels = np.zeros((6, 12), dtype=np.int8)
    labels[:2, 0] = 1            # AU1: 2 positives, 4 negatives
    labels[:, 1] = -1            # AU2: never labelled
    labels[0, 1] = 1             #      ... except one positive
    labels[:, 2] = 0             # AU4: zero positives
    labels[:5, 3] = 1            # AU6: 5 positives, 1 negative
    labels[5, :] = -1            # last frame unlabelled everywhere
    return labels


def test_pos_weight_is_negative_over_positive_on_labelled_frames_capped() -> None:
    weight = compute_pos_weight(_au_labels(), cap=3.0)
    assert weight.dtype == torch.float32 and weight.shape == (12,)
    assert weight[0].item() == pytest.approx(3 / 2)    # frame 5 is unlabelled: 3 negatives / 2 positives
    assert weight[1].item() == pytest.approx(0.0)      # 1 positive, no labelled negative
    assert weight[2].item() == pytest.approx(3.0)      # zero positives -> cap
    assert weight[3].item() == pytest.approx(0.0)      # 5 positives, frame 5's negative is unlabelled
    assert weight[4].item() == pytest.approx(3.0)      # all negative -> cap


def test_pos_weight_caps_large_ratios() -> None:
    labels = np.zeros((101, 12), dtype=np.int8)
    labels[0] = 1
    assert torch.all(compute_pos_weight(labels, cap=10.0) == 10.0)
    assert torch.all(compute_pos_weight(labels, cap=1000.0) == 100.0)


@pytest.mark.parametrize(
    ("labels", "cap", "match"),
    [
        (np.zeros((4, 11)), 5.0, r"shape \(N, 12\)"),
        (np.full((2, 12), 2), 5.0, "found 2 at frame 0"),
        (np.zeros((2, 12)), 0.0, "cap"),
        (np.zeros((2, 12)), float("inf"), "cap"),
    ],
)
def test_pos_weight_rejects_bad_input(labels: np.ndarray, cap: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_pos_weight(labels, cap)


def test_au_bce_matches_hand_computation_and_ignores_unlabelled() -> None:
    logits = torch.zeros(2, 12)
    logits[0, 0], logits[1, 0], logits[0, 1] = 2.0, -1.0, 0.5
    targets = torch.full((2, 12), -1, dtype=torch.int8)
    targets[0, 0], targets[1, 0], targets[0, 1] = 1, 0, 0
    pos_weight = torch.ones(12)
    pos_weight[0] = 3.0

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    # positive: w * log(1 + e^-x); negative: log(1 + e^x); mean over the 3 labelled entries
    expected = (3.0 * softplus(-2.0) + softplus(-1.0) + softplus(0.5)) / 3
    loss = au_bce_loss(logits, targets, pos_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    # changing an unlabelled entry's logit changes nothing
    logits[1, 5] = 100.0
    assert au_bce_loss(logits, targets, pos_weight).item() == pytest.approx(expected, rel=1e-6)


def test_focal_matches_hand_computation_with_alpha() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0], [0.0] * 7, [5.0] * 7])
    targets = torch.tensor([0, 3, -1])
    alpha = torch.tensor([0.5, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0])
    gamma = 2.0
    p0 = math.exp(2.0) / (math.exp(2.0) + 5 + math.exp(-1.0))
    p1 = 1 / 7
    expected = (-0.5 * (1 - p0) ** 2 * math.log(p0) - 2.0 * (1 - p1) ** 2 * math.log(p1)) / 2
    loss = expr_focal_loss(logits, targets, gamma=gamma, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 7, generator=generator)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, -1])
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)
    assert expr_focal_loss(logits, targets, gamma=0.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_extreme_logits_give_finite_loss_and_gradients() -> None:
    au_logits = torch.tensor([[1e4, -1e4] * 6, [-1e4, 1e4] * 6], requires_grad=True)
    au_targets = torch.tensor([[1, 1] * 6, [0, -1] * 6])
    expr_logits = torch.tensor([[1e4, -1e4, 0, 0, 0, 0, 0], [-1e4, 1e4, 0, 0, 0, 0, 0]], requires_grad=True)
    expr_targets = torch.tensor([0, 0])
    for gamma in (0.0, 0.5, 2.0):
        au = au_bce_loss(au_logits, au_targets, torch.full((12,), 10.0))
        expr = expr_focal_loss(expr_logits, expr_targets, gamma=gamma, alpha=torch.ones(7))
        assert torch.isfinite(au) and torch.isfinite(expr)
        assert au.item() > 1e3 and expr.item() > 1e3   # the confidently wrong entries dominate
        au_logits.grad = expr_logits.grad = None
        (au + expr).backward()
        assert torch.isfinite(au_logits.grad).all() and torch.isfinite(expr_logits.grad).all()


def test_au_with_zero_positives_stays_finite() -> None:
    labels = np.zeros((4, 12), dtype=np.int8)
    labels[:, :6] = 1
    pos_weight = compute_pos_weight(labels, cap=50.0)
    logits = torch.randn(4, 12, requires_grad=True)
    loss = au_bce_loss(logits, torch.as_tensor(labels), pos_weight)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_batch_without_labels_is_a_connected_zero() -> None:
    au_logits = torch.randn(3, 12, requires_grad=True)
    expr_logits = torch.randn(3, 7, requires_grad=True)
    au = au_bce_loss(au_logits, torch.full((3, 12), -1), torch.ones(12))
    expr = expr_focal_loss(expr_logits, torch.full((3,), -1), gamma=2.0, alpha=torch.ones(7))
    assert au.item() == 0.0 and expr.item() == 0.0
    assert au.grad_fn is not None and expr.grad_fn is not None
    (au + expr).backward()
    assert torch.all(au_logits.grad == 0) and torch.all(expr_logits.grad == 0)


def test_half_precision_inputs_compute_in_float32() -> None:
    logits = torch.full((2, 12), 20.0, dtype=torch.bfloat16)
    targets = torch.zeros(2, 12, dtype=torch.long)
    loss = au_bce_loss(logits, targets, torch.ones(12))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(20.0, rel=1e-6)
    expr = expr_focal_loss(torch.zeros(2, 7, dtype=torch.float16), torch.tensor([1, 2]), gamma=1.0)
    assert expr.dtype == torch.float32 and expr.item() == pytest.approx(6 / 7 * math.log(7), rel=1e-5)


def test_loss_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        au_bce_loss(torch.zeros(2, 7), torch.zeros(2, 7), torch.ones(12))
    with pytest.raises(ValueError, match="targets shape"):
        au_bce_loss(torch.zeros(2, 12), torch.zeros(3, 12), torch.ones(12))
    with pytest.raises(ValueError, match="pos_weight"):
        au_bce_loss(torch.zeros(2, 12), torch.zeros(2, 12), torch.ones(7))
    with pytest.raises(ValueError, match="gamma"):
        expr_focal_loss(torch.zeros(2, 7), torch.zeros(2, dtype=torch.long), gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        expr_focal_loss(torch.zeros(2, 7), torch.zeros(2, dtype=torch.long), gamma=1.0, alpha=torch.ones(12))


# --- valence-arousal CCC loss ---------------------------------------------------------------------

def test_va_ccc_loss_is_one_minus_the_metric_ccc_per_dimension() -> None:
    from pipeline.metrics import ccc
    from pipeline.train.losses import va_ccc_loss

    rng = np.random.default_rng(3)
    target = rng.uniform(-1, 1, size=(50, 2))
    target[rng.random((50, 2)) < 0.3] = np.nan
    pred = np.tanh(rng.normal(size=(50, 2)))
    expected = np.mean([1.0 - ccc(target[:, k], pred[:, k]) for k in range(2)])
    got = va_ccc_loss(torch.as_tensor(pred, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_va_ccc_loss_adds_weighted_mse_and_reads_sequences() -> None:
    from pipeline.train.losses import va_ccc_loss

    target = torch.tensor([[[0.5, -0.5], [0.0, 0.5], [-0.5, 0.0]]])   # (1, 3, 2)
    pred = target + 0.1
    plain = va_ccc_loss(pred, target)
    with_mse = va_ccc_loss(pred, target, mse_weight=2.0)
    assert with_mse.item() == pytest.approx(plain.item() + 2.0 * 0.01, abs=1e-6)


def test_va_ccc_loss_without_labels_is_a_connected_zero() -> None:
    from pipeline.train.losses import va_ccc_loss

    pred = torch.zeros(4, 2, requires_grad=True)
    target = torch.full((4, 2), float("nan"))
    target[0] = 0.3   # one labelled frame per dimension: no CCC can be computed
    loss = va_ccc_loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros(4, 2))


def test_va_ccc_loss_stays_finite_for_constant_predictions_and_labels() -> None:
    from pipeline.train.losses import va_ccc_loss

    pred = torch.full((6, 2), 0.2, requires_grad=True)
    loss = va_ccc_loss(pred, torch.full((6, 2), 0.2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_va_ccc_loss_rejects_bad_shapes_and_weights() -> None:
    from pipeline.train.losses import va_ccc_loss

    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        va_ccc_loss(torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="targets shape"):
        va_ccc_loss(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="mse_weight"):
        va_ccc_loss(torch.zeros(3, 2), torch.zeros(3, 2), mse_weight=-1.0)
