"""LoopState: best-epoch tracking, saved state (mid-epoch too), resume only with the same key and layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.train.loop_state import EpochRecord, LoopState

KEY = {"config": {"lr": 0.1}, "data": {"store": "abc"}}


def _model_and_optimizer(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _entry(epoch: int, score: float) -> EpochRecord:
    return EpochRecord(epoch, score, {"expr": {"score": score}}, {"expr": 1.0}, 0.5)


def test_best_is_the_highest_score_and_a_tie_keeps_the_earlier_epoch(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    loop = LoopState(tmp_path / "state.pt", KEY)
    weights = []
    for epoch, score in enumerate([0.2, 0.5, 0.5, 0.3], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        weights.append(model.weight.detach().clone())
        loop.end_epoch(_entry(epoch, score), model, optimizer)
    assert loop.epoch == 4 and [h["epoch"] for h in loop.history] == [1, 2, 3, 4]
    best = loop.restore_best(model, "train_x")
    assert (best["epoch"], best["score"], best["metrics"]) == (2, 0.5, {"expr": {"score": 0.5}})
    torch.testing.assert_close(model.weight, weights[1])
    assert not model.training


def test_best_weights_are_a_copy_not_the_live_tensors(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    loop = LoopState(tmp_path / "state.pt", KEY)
    assert loop.record(_entry(1, 0.5), model)
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    torch.testing.assert_close(loop.best["state_dict"]["weight"], kept)


def test_resume_restores_model_optimizer_and_rng_when_the_key_matches(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer(seed=0)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    saved = LoopState(path, KEY)
    saved.end_epoch(_entry(1, 0.4), model, optimizer, extra={"scheduler": {"step": 7}})
    expected_draw = torch.rand(3)

    other, other_optimizer = _model_and_optimizer(seed=1)
    torch.manual_seed(123)
    loop = LoopState.resume(path, KEY, other, other_optimizer)
    assert (loop.epoch, loop.batch, loop.best["epoch"], [h["epoch"] for h in loop.history]) == (1, 0, 1, [1])
    assert loop.extra == {"scheduler": {"step": 7}} and loop.resumed_from == (1, 0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[name], value)
    assert other_optimizer.state_dict()["state"][0]["momentum_buffer"] is not None
    torch.testing.assert_close(torch.rand(3), expected_draw)


@pytest.mark.parametrize("key", [
    {"config": {"lr": 0.2}, "data": KEY["data"]},
    {"config": KEY["config"], "data": {"store": "other"}},
])
def test_resume_starts_over_when_the_key_differs(tmp_path: Path, key: dict) -> None:
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer(seed=0)
    LoopState(path, KEY).end_epoch(_entry(1, 0.4), model, optimizer)
    other, other_optimizer = _model_and_optimizer(seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    loop = LoopState.resume(path, key, other, other_optimizer)
    assert (loop.epoch, loop.best, loop.history) == (0, None, [])
    for name, value in before.items():
        torch.testing.assert_close(other.state_dict()[name], value)


def test_resume_starts_over_when_the_saved_run_is_past_max_epochs(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer()
    saved = LoopState(path, KEY)
    for epoch in range(1, 4):
        saved.end_epoch(_entry(epoch, 0.1), model, optimizer)
    assert LoopState.resume(path, KEY, model, optimizer, max_epochs=3).epoch == 3
    assert LoopState.resume(path, KEY, model, optimizer, max_epochs=2).epoch == 0


def test_no_file_is_a_fresh_start(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    loop = LoopState.resume(tmp_path / "missing" / "state.pt", KEY, model, optimizer)
    assert (loop.epoch, loop.best, loop.history) == (0, None, [])


def test_no_epoch_trained_is_an_error_naming_the_section(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    with pytest.raises(ValueError, match=r"train_x has no epoch with a finite selection score "
                                         r"\(train_x\.epochs must be >= 1\)"):
        LoopState(tmp_path / "state.pt", KEY).restore_best(model, "train_x")


def test_a_non_finite_score_is_never_the_best(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    loop = LoopState(tmp_path / "state.pt", KEY)
    assert not loop.end_epoch(_entry(1, float("nan")), model, optimizer)
    assert loop.best is None and loop.epoch == 1
    assert loop.end_epoch(_entry(2, 0.1), model, optimizer)
    assert not loop.end_epoch(_entry(3, float("inf")), model, optimizer)
    assert loop.restore_best(model, "train_x")["epoch"] == 2


def test_a_mid_epoch_save_resumes_at_the_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer()
    saved = LoopState(path, KEY)
    saved.end_epoch(_entry(1, 0.3), model, optimizer)
    saved.batch = 5
    saved.save(model, optimizer)
    loop = LoopState.resume(path, KEY, *_model_and_optimizer(seed=1))
    assert (loop.epoch, loop.batch, loop.resumed_from) == (1, 5, (1, 5))
    assert loop.end_epoch(_entry(2, 0.4), model, optimizer) and loop.batch == 0


def test_only_the_writer_writes(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    LoopState(tmp_path / "state.pt", KEY, writer=False).end_epoch(_entry(1, 0.3), model, optimizer)
    assert not (tmp_path / "state.pt").exists()


def test_a_state_file_of_another_layout_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer()
    torch.save({**KEY, "epoch": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best": None, "history": [], "torch_rng": torch.get_rng_state()}, path)
    loop = LoopState.resume(path, KEY, model, optimizer)
    assert (loop.epoch, loop.resumed_from) == (0, None)


@pytest.mark.parametrize("other", [lambda: nn.Sequential(nn.Linear(3, 2)), lambda: nn.Linear(4, 2)])
def test_a_state_of_another_model_starts_over_with_one_line(tmp_path: Path, other, caplog) -> None:
    """Same params and data, but the code now builds another model (renamed or reshaped weights)."""
    path = tmp_path / "state.pt"
    model, optimizer = _model_and_optimizer()
    LoopState(path, KEY).end_epoch(_entry(1, 0.4), model, optimizer)
    changed = other()
    caplog.set_level("INFO")
    loop = LoopState.resume(path, KEY, changed, torch.optim.SGD(changed.parameters(), lr=0.1))
    assert (loop.epoch, loop.best, loop.history) == (0, None, [])
    assert [m for m in caplog.messages if "another model" in m] == [
        f"{path}: saved state holds another model's weights than this code builds; starting over"]
