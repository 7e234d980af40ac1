"""Alternating AU/EXPR updates: schedules, batch interleaving, and inactive heads that never move."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.train.alternating import TaskSchedule, alternating_batches, multitask_step, task_heads
from pipeline.train.losses import au_bce_loss, expr_focal_loss


class TinyMultiTask(nn.Module):
    """Trunk + AU, EXPR and VA heads, the shape every multi-task model in the pipeline has."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.au_head = nn.Linear(8, 12)
        self.expr_head = nn.Linear(8, 7)
        self.va_head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = self.trunk(x)
        return self.au_head(feat), self.expr_head(feat), torch.tanh(self.va_head(feat))


def test_epoch_schedule_rotates_tasks_starting_with_expression() -> None:
    schedule = TaskSchedule("epoch")
    assert [schedule.task_for_epoch(e) for e in range(4)] == ["expr", "au", "expr", "au"]
    assert schedule.task_for_batch(1, 5) == "au"
    assert TaskSchedule("epoch", tasks=("au",)).task_for_epoch(3) == "au"


def test_batch_schedule_rotates_per_batch() -> None:
    schedule = TaskSchedule("batch", tasks=("au", "expr"))
    assert [schedule.task_for_batch(7, b) for b in range(3)] == ["au", "expr", "au"]
    with pytest.raises(ValueError, match="batch mode"):
        schedule.task_for_epoch(0)


@pytest.mark.parametrize(("mode", "tasks"), [("sometimes", ("au",)), ("epoch", ()), ("batch", ("au", "au")), ("epoch", ("arousal",))])
def test_schedule_rejects_bad_settings(mode: str, tasks: tuple) -> None:
    with pytest.raises(ValueError):
        TaskSchedule(mode, tasks=tasks)  # type: ignore[arg-type]


def test_epoch_mode_yields_one_loader_per_epoch() -> None:
    loaders = {"au": ["a1", "a2", "a3"], "expr": ["e1"]}
    schedule = TaskSchedule("epoch")
    assert list(alternating_batches(schedule, 0, loaders)) == [("expr", "e1")]
    assert list(alternating_batches(schedule, 1, loaders)) == [("au", "a1"), ("au", "a2"), ("au", "a3")]


def test_batch_mode_cycles_the_shorter_loader_until_the_longer_is_done() -> None:
    loaders = {"au": ["a1", "a2", "a3"], "expr": ["e1", "e2"]}
    got = list(alternating_batches(TaskSchedule("batch"), 0, loaders))
    assert got == [("expr", "e1"), ("au", "a1"), ("expr", "e2"), ("au", "a2"), ("expr", "e1"), ("au", "a3")]
    equal = {"au": ["a1", "a2"], "expr": ["e1", "e2"]}
    assert [b for _, b in alternating_batches(TaskSchedule("batch"), 0, equal)] == ["e1", "a1", "e2", "a2"]


def test_batch_mode_skips_an_empty_loader_and_rejects_one_shot_iterators() -> None:
    got = list(alternating_batches(TaskSchedule("batch"), 0, {"au": ["a1", "a2"], "expr": []}))
    assert got == [("au", "a1"), ("au", "a2")]
    assert list(alternating_batches(TaskSchedule("batch"), 0, {"au": [], "expr": []})) == []
    one_shot = {"au": ["a1", "a2", "a3"], "expr": iter(["e1"])}
    with pytest.raises(ValueError, match="re-iterable"):
        list(alternating_batches(TaskSchedule("batch"), 0, one_shot))


def test_missing_loader_is_an_error() -> None:
    with pytest.raises(ValueError, match="no loader"):
        list(alternating_batches(TaskSchedule("epoch"), 0, {"au": [1]}))


def test_task_heads_requires_every_head() -> None:
    assert set(task_heads(TinyMultiTask())) == {"au", "expr", "va"}
    with pytest.raises(ValueError, match="au_head"):
        task_heads(nn.Linear(2, 2))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("mode", ["epoch", "batch"])
def test_inactive_head_never_changes_with_momentum_and_weight_decay(mode: str) -> None:
    torch.manual_seed(0)
    model = TinyMultiTask()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, generator=generator)
    au = torch.randint(0, 2, (16, 12), generator=generator)
    expr = torch.randint(0, 7, (16,), generator=generator)
    batches = [(x[i : i + 4], au[i : i + 4], expr[i : i + 4]) for i in range(0, 16, 4)]
    schedule = TaskSchedule(mode)  # type: ignore[arg-type]
    steps = 0
    for epoch in range(4):
        for task, (xb, aub, exb) in alternating_batches(schedule, epoch, {"au": batches, "expr": batches}):
            heads = {"au": _snapshot(model.au_head), "expr": _snapshot(model.expr_head)}
            trunk = _snapshot(model.trunk)
            au_logits, expr_logits, _ = model(xb)  # both heads run; only the active loss is built
            if task == "au":
                loss = au_bce_loss(au_logits, aub, torch.full((12,), 2.0))
            else:
                loss = expr_focal_loss(expr_logits, exb, gamma=2.0)
            multitask_step(model, optimizer, task, loss)
            inactive = "expr" if task == "au" else "au"
            assert _changed(heads[inactive], task_heads(model)[inactive]) == set()
            assert _changed(heads[task], task_heads(model)[task]) == {"weight", "bias"}
            assert _changed(trunk, model.trunk) == {"0.weight", "0.bias"}
            steps += 1
    assert steps == (16 if mode == "epoch" else 32)


def test_a_loss_touching_the_inactive_head_still_leaves_it_unchanged() -> None:
    torch.manual_seed(0)
    model = TinyMultiTask()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x = torch.randn(4, 6)
    for _ in range(2):  # the first step fills the momentum buffers of both heads
        au_logits, expr_logits, _ = model(x)
        multitask_step(model, optimizer, "au", au_logits.square().mean() + expr_logits.square().mean())
    before = _snapshot(model.expr_head)
    au_logits, expr_logits, _ = model(x)
    # zero-weighted inactive term: its gradients are zeros, not None, unless the step clears them
    multitask_step(model, optimizer, "au", au_logits.square().mean() + 0.0 * expr_logits.sum())
    assert _changed(before, model.expr_head) == set()


def test_multitask_step_clips_gradients_and_returns_detached_loss() -> None:
    torch.manual_seed(0)
    model = TinyMultiTask()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = _snapshot(model.au_head)
    au_logits, _, _ = model(torch.randn(4, 6) * 100)
    out = multitask_step(model, optimizer, "au", au_logits.square().mean(), max_grad_norm=1e-3)
    assert out.requires_grad is False and out.item() > 0
    moved = torch.cat([(model.au_head.state_dict()[k] - before[k]).flatten() for k in before])
    assert moved.norm().item() <= 1e-3 + 1e-6
    with pytest.raises(ValueError, match="unknown task"):
        multitask_step(model, optimizer, "arousal", au_logits.sum())  # type: ignore[arg-type]
