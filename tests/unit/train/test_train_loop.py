"""The shared epoch loop: scoring, selection, divergence checks, resume through run_epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.train.loop import (
    DivergedError, Trainer, check_loss, check_weights, frame_set_metrics, mean_losses, run_epochs, selection_score,
    subject_metrics, validation_metrics,
)
from pipeline.train.loop_state import LoopState
from pipeline.train.optim import OptimConfig

KEY = {"config": {"lr": 0.1}, "data": None}


def _linear() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, OptimConfig(lr=0.1).build(model.parameters())


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer):
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)), torch.ones(32, 1)

    def train_epoch(epoch: int) -> dict[str, list[float]]:
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        return {"au": [float(loss.detach())], "expr": []}

    return train_epoch


class _Toy(Trainer):
    """A trainer made of the given functions, without a held-out scorer."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_epoch: Callable[[int], Any],
                 validate: Callable[[], Any], select: Callable[[], Any] | None = None) -> None:
        self.model, self.optimizer = model, optimizer
        self._train_epoch, self._validate, self._select = train_epoch, validate, select

    def fit_epoch(self, loop: LoopState, epoch: int) -> dict[str, list[float]]:
        return self._train_epoch(epoch)

    def validate(self) -> dict[str, Any]:
        return self._validate()


class _ToyWithHoldout(_Toy):
    def select(self) -> dict[str, Any]:
        return self._select()


def _toy(model: nn.Module, optimizer: torch.optim.Optimizer, train_epoch: Callable[[int], Any],
         validate: Callable[[], Any], select: Callable[[], Any] | None = None) -> Trainer:
    return (_Toy if select is None else _ToyWithHoldout)(model, optimizer, train_epoch, validate, select)


def test_validation_metrics_score_only_the_tasks_that_have_frames() -> None:
    au_true = np.array([[1] * 12, [0] * 12], np.int8)
    metrics = validation_metrics((au_true, au_true.astype(np.int64)), None)
    assert set(metrics) == {"au"} and metrics["au"]["f1"] == 1.0
    both = validation_metrics((au_true, np.zeros_like(au_true)), (np.array([0, 3]), np.array([0, 3])))
    assert selection_score(both) == pytest.approx((both["au"]["score"] + both["expr"]["score"]) / 2)
    with pytest.raises(ValueError, match="no validation frames"):
        selection_score({})


def test_mean_losses_mark_a_task_without_batches() -> None:
    assert mean_losses({"au": [1.0, 3.0], "expr": []}) == {"au": 2.0, "expr": None}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_names_stage_epoch_batch_and_what_to_try(value: float) -> None:
    with pytest.raises(DivergedError, match=r"^train_x: training diverged at epoch 3, batch 5: the expr loss "
                                            r".*a smaller train_x\.max_grad_norm \(now 5\.0\)$"):
        check_loss(value, "train_x", 3, 5, "expr", max_grad_norm=5.0)
    check_loss(1e30, "train_x", 3, 5, "expr")


def test_non_finite_weights_are_named() -> None:
    model, _ = _linear()
    check_weights(model, "train_x", 1)
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"epoch 2, batch 4: bias holds non-finite values"):
        check_weights(model, "train_x", 2, 4)


def _report(score: float) -> dict[str, dict[str, Any]]:
    """A frame-set report whose face_frames score is ``score`` (all_frames a different number)."""
    return {"face_frames": {"score": score}, "all_frames": {"score": score / 2}}


def test_run_epochs_keeps_the_best_epoch_and_resumes(tmp_path: Path) -> None:
    model, optimizer = _linear()
    scores = iter([0.3, 0.5, 0.4])
    loop = LoopState.resume(tmp_path / "state.pt", KEY, model, optimizer)
    best = run_epochs(loop, "train_x", 3, _toy(model, optimizer, _train_epoch(model, optimizer),
                      lambda: _report(next(scores))))
    assert best["epoch"] == 2 and [h["epoch"] for h in loop.history] == [1, 2, 3]
    torch.testing.assert_close(model.weight, best["state_dict"]["weight"])
    again, again_optimizer = _linear()
    resumed = LoopState.resume(tmp_path / "state.pt", KEY, again, again_optimizer)
    assert resumed.resumed_from == (3, 0)
    assert run_epochs(resumed, "train_x", 3, _toy(again, again_optimizer, lambda e: pytest.fail("trained again"),
                      lambda: pytest.fail("validated again")))["epoch"] == 2


# Per epoch: validation peaks at epoch 2, the held-out selection subjects at epoch 3 (of 4).
VALIDATION_SCORES = [0.2, 0.9, 0.5, 0.4]
SELECTION_SCORES = [0.1, 0.3, 0.6, 0.2]


@pytest.mark.parametrize(("mode", "kept"), [("holdout", 3), ("validation", 2), ("last", 4)])
def test_each_selection_mode_keeps_its_epoch(tmp_path: Path, mode: str, kept: int) -> None:
    model, optimizer = _linear()
    validation, selection = iter(VALIDATION_SCORES), iter(SELECTION_SCORES)
    loop = LoopState.resume(tmp_path / "state.pt", KEY, model, optimizer)
    best = run_epochs(loop, "train_x", 4, _toy(model, optimizer, _train_epoch(model, optimizer),
                      lambda: _report(next(validation)), lambda: _report(next(selection))), mode=mode)
    assert best["epoch"] == kept
    torch.testing.assert_close(model.weight, best["state_dict"]["weight"])
    # the kept epoch's validation report is the one recorded for that epoch, untouched by the choice
    assert best["metrics"]["face_frames"]["score"] == VALIDATION_SCORES[kept - 1]
    expected = {"holdout": SELECTION_SCORES, "validation": VALIDATION_SCORES, "last": [None] * 4}[mode]
    assert [h["score"] for h in loop.history] == expected
    assert [h["selection"] is not None for h in loop.history] == [mode == "holdout"] * 4


def test_holdout_resumes_mid_run_and_keeps_the_same_epoch(tmp_path: Path) -> None:
    model, optimizer = _linear()
    validation, selection = iter(VALIDATION_SCORES), iter(SELECTION_SCORES)
    loop = LoopState.resume(tmp_path / "state.pt", KEY, model, optimizer)
    run_epochs(loop, "train_x", 2, _toy(model, optimizer, _train_epoch(model, optimizer),
               lambda: _report(next(validation)), lambda: _report(next(selection))), mode="holdout")
    again, again_optimizer = _linear()
    resumed = LoopState.resume(tmp_path / "state.pt", KEY, again, again_optimizer)
    assert resumed.resumed_from == (2, 0) and resumed.best["epoch"] == 2
    best = run_epochs(resumed, "train_x", 4, _toy(again, again_optimizer, _train_epoch(again, again_optimizer),
                      lambda: _report(next(validation)), lambda: _report(next(selection))), mode="holdout")
    assert best["epoch"] == 3 and [h["score"] for h in resumed.history] == SELECTION_SCORES


def test_holdout_without_a_selection_scorer_is_an_error(tmp_path: Path) -> None:
    model, optimizer = _linear()
    # before any epoch is trained: the trainer does not define select()
    with pytest.raises(ValueError, match="holdout needs the held-out subjects' scorer"):
        run_epochs(LoopState(tmp_path / "state.pt", KEY), "train_x", 1,
                   _toy(model, optimizer, lambda e: pytest.fail("trained"), lambda: _report(0.5)), mode="holdout")


def test_frame_set_metrics_score_face_frames_and_all_frames() -> None:
    au_true = np.array([[1] * 12, [0] * 12, [1] * 12, [-1] * 12], np.int8)
    au_pred = np.array([[1] * 12, [0] * 12, [0] * 12, [0] * 12], np.int64)
    face = np.array([True, True, False, False])
    report = frame_set_metrics((au_true, au_pred, face), None)
    assert report["face_frames"]["au"]["acc"] == 1.0 and report["face_frames"]["frames"] == {"au": 2, "expr": 0}
    assert report["all_frames"]["au"]["acc"] == pytest.approx(2 / 3)
    assert report["all_frames"]["frames"] == {"au": 3, "expr": 0} and "expr" not in report["all_frames"]
    nobody = frame_set_metrics((au_true, au_pred, np.zeros(4, bool)), None)
    assert nobody["face_frames"]["score"] is None and nobody["all_frames"]["score"] is not None


def test_frame_set_metrics_score_va_beside_the_other_tasks_and_leave_it_out_without_labels() -> None:
    nan = np.nan
    va_true = np.array([[0.5, -0.5], [-0.5, 0.5], [0.2, nan], [nan, nan], [0.1, 0.3]], np.float32)
    va_pred = np.array([[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0], [0.9, 0.9], [0.0, 0.0]], np.float32)
    face = np.array([True, True, True, True, False])
    expr = (np.array([0, 3, 3, -1, 1]), np.array([0, 3, 3, 0, 0]), face)
    report = frame_set_metrics(None, expr, (va_true, va_pred, face))
    faces = report["face_frames"]
    assert faces["frames"] == {"au": 0, "expr": 3, "va": 3}   # frames with any VA label
    assert faces["va"]["frames_valence"] == 3 and faces["va"]["frames_arousal"] == 2
    assert faces["score"] == pytest.approx((faces["expr"]["score"] + faces["va"]["score"]) / 2)
    assert report["all_frames"]["frames"]["va"] == 4
    # a frame set without a VA label has no VA entry (CCC is undefined there), only its count of 0
    unlabelled = frame_set_metrics(None, expr, (np.full((5, 2), nan, np.float32), va_pred, face))
    assert "va" not in unlabelled["face_frames"] and unlabelled["face_frames"]["frames"]["va"] == 0
    # no VA given at all: the report of before, without even the count
    assert frame_set_metrics(None, expr)["face_frames"]["frames"] == {"au": 0, "expr": 3}


def test_subject_metrics_score_va_of_whole_subjects_when_outputs_and_labels_carry_it() -> None:
    n = 4
    au, expr = np.full((n, 12), -1, np.int8), np.array([1, 2, 1, 2], np.int8)
    va = np.array([[0.1, 0.2], [0.3, -0.2], [-0.4, 0.0], [0.6, 0.5]], np.float32)
    face = np.array([True, True, True, False])
    outputs = {"s": (np.zeros((n, 12), np.float32), np.eye(7, dtype=np.float32)[expr], va.copy())}
    report = subject_metrics(outputs, lambda name: (au, expr, face, va), {"au": [], "expr": ["s"], "va": ["s"]})
    assert report["face_frames"]["va"]["score"] == pytest.approx(1.0)    # the labels themselves: CCC 1
    assert report["face_frames"]["expr"]["acc"] == 1.0 and report["all_frames"]["frames"]["va"] == 4
    # callers that score AU and EXPR only keep their (au, expr) outputs and three labels
    two = subject_metrics({"s": outputs["s"][:2]}, lambda name: (au, expr, face), {"au": [], "expr": ["s"], "va": ["s"]})
    assert "va" not in two["face_frames"] and two["face_frames"]["frames"] == {"au": 0, "expr": 3}


def test_run_epochs_stops_on_weights_that_went_non_finite(tmp_path: Path) -> None:
    model, optimizer = _linear()

    def poisoned_epoch(epoch: int) -> dict[str, list[float]]:
        with torch.no_grad():
            model.weight.fill_(float("inf"))
        return {"au": [0.5]}

    loop = LoopState(tmp_path / "state.pt", KEY)
    with pytest.raises(DivergedError, match="train_x: training diverged at epoch 1: weight holds non-finite"):
        run_epochs(loop, "train_x", 2, _toy(model, optimizer, poisoned_epoch, lambda: _report(0.1)))
    assert loop.best is None and not (tmp_path / "state.pt").exists()


def test_optim_config_checks_and_builds() -> None:
    model, _ = _linear()
    assert isinstance(OptimConfig(optimizer="adam", lr=1e-3).build(model.parameters()), torch.optim.Adam)
    for bad, message in [({"lr": float("nan")}, "lr: must be > 0"), ({"momentum": 1.0}, "momentum"),
                         ({"max_grad_norm": 0.0}, "max_grad_norm"), ({"pos_weight_cap": -1.0}, "pos_weight_cap")]:
        with pytest.raises(ValueError, match=message):
            OptimConfig(**bad)


def test_every_trainer_takes_the_one_shape() -> None:
    from pipeline.train import audio, pretrain, sequence, visual
    trainers = [visual._VisualTrainer, pretrain._PretrainTrainer, audio._AudioTrainer, sequence._SequenceTrainer]
    assert all(issubclass(cls, Trainer) and not getattr(cls, "__abstractmethods__") for cls in trainers)
    # the three trainers that keep an epoch by held-out videos score them; pretraining verifies only
    assert [cls.select is not Trainer.select for cls in trainers] == [True, False, True, True]
