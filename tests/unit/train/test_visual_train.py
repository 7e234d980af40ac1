"""Visual fine-tuning: frame selection, epoch plans, the training loop, resume and DDP (gloo, 2 processes)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _baselines import trivial_au_score, trivial_expr_score

from _no_pickles import forbid_pickled_collectives
from _torchrun_finetune import state_digest as _digest
from pipeline.au_thresholds import probabilities, search_thresholds
from pipeline.config import ConfigError
from pipeline.storage.frame_store import FrameStore
from pipeline.data.labels_store import read_all_labels
from pipeline.data.manifest import read_manifest
from pipeline.metrics import au_metrics, expr_metrics
from pipeline.model_files.checkpoint import CheckpointMismatchError
from pipeline.model_files.visual import build_from_checkpoint
from pipeline.models.preprocess import to_model_input
from pipeline.train import ddp, loop, visual
from pipeline.train.alternating import TaskSchedule
from pipeline.train.augment import AugmentConfig
from pipeline.train.ddp import DistContext
from pipeline.train.epoch_plan import epoch_plan, split_batches
from pipeline.train.loop import DivergedError, TrainResult
from pipeline.train.frames_dataset import (
    FrameDataset, has_labels, read_frame_labels, select_frames, select_subject_frames, select_validation_frames,
)
from pipeline.train.visual import VisualTrainConfig, train_visual

TINY = dict(width_mult=0.0625, epochs=2, batch_size=16, lr=0.05, max_frames_per_epoch=32)


def _run(prepared: Path, frames: Path, out: Path, cfg: VisualTrainConfig, **kwargs: Any) -> TrainResult:
    return train_visual(
        read_manifest(prepared / "manifest.json"), prepared / "labels.h5", frames, out / "model.pt",
        out / "metrics.json", out / "work", cfg, progress=False, **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tiny_prepared: Path, tiny_frames: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One uninterrupted tiny training run (checkpointing every 2 batches)."""
    out = tmp_path_factory.mktemp("visual")
    return out, _run(tiny_prepared, tiny_frames, out, VisualTrainConfig(**TINY), checkpoint_every=2)


# -- frame selection ---------------------------------------------------------------------------

def test_training_frames_have_a_face_and_a_label(tiny_prepared: Path, tiny_frames: Path) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    labels = read_all_labels(tiny_prepared / "labels.h5")
    for task, sources in (("au", ("affwild2",)), ("au", ("affwild2", "bp4d")), ("expr", ("affwild2",))):
        fs = select_frames(manifest, labels, task, "train", sources)
        expected = 0
        for record in manifest.in_split(task, "train", sources):
            item = labels[record.name]
            lab = (item.au >= 0).any(axis=1) if task == "au" else item.expr >= 0
            expected += int((lab & item.face_present).sum())
        assert len(fs) == expected > 0
        for i in range(0, len(fs), 7):
            name, frame = fs.location(i)
            assert labels[name].face_present[frame]
            assert manifest.by_name(name).split(task) == "train"
            assert manifest.by_name(name).source in sources
            np.testing.assert_array_equal(fs.au[i], labels[name].au[frame])
    for use_bp4d in (True, False):
        au_train = visual.build_training_data(manifest, tiny_prepared / "labels.h5", tiny_frames, use_bp4d).au_train
        assert any(manifest.by_name(n).source == "bp4d" for n in au_train.names) == use_bp4d


def test_validation_union_gives_each_tasks_leakage_free_frames(tiny_prepared: Path) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    labels = read_all_labels(tiny_prepared / "labels.h5")
    val = select_validation_frames(manifest, labels)
    for task in ("au", "expr"):
        own = select_frames(manifest, labels, task, "validation")
        mask = has_labels(val, task)
        got = {val.location(i) for i in np.flatnonzero(mask)}
        assert got == {own.location(i) for i in range(len(own))} and got
        # no validation subject of a task trains the other task (the protocol prepare applied)
        other = "expr" if task == "au" else "au"
        train_videos = {r.video for r in manifest.in_split(other, "train")}
        assert not {manifest.by_name(name).video for name, _ in got} & train_videos


def test_frame_dataset_returns_store_images_and_labels(tiny_prepared: Path, tiny_frames: Path) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    fs = select_frames(manifest, read_all_labels(tiny_prepared / "labels.h5"), "expr", "train")
    dataset = FrameDataset(tiny_frames, fs)
    picks = [len(fs) - 1, 0, 5, 0]
    items = dataset.__getitems__(picks)
    store = FrameStore(tiny_frames)
    for (image, au, expr), i in zip(items, picks):
        name, frame = fs.location(i)
        np.testing.assert_array_equal(image.numpy(), store.read(name, [frame])[0])
        assert image.dtype == torch.uint8 and image.shape == (112, 112, 3) and image.any()
        assert int(expr) == fs.expr[i] >= 0 and au.shape == (12,)
    with pytest.raises(IndexError):
        dataset.__getitems__([len(fs)])


# -- epoch plans and sharding -----------------------------------------------------------------

def test_epoch_plan_is_seeded_capped_and_alternates() -> None:
    sizes = {"au": 50, "expr": 24}
    plan = epoch_plan(TaskSchedule("batch"), 3, sizes, batch_size=8, seed=1, max_frames=40)
    assert [t for t, _ in plan] == ["expr", "au"] * 5  # 40 AU frames = 5 batches; EXPR cycles (3 per pass)
    assert all(len(b) == 8 for _, b in plan)
    au = np.concatenate([b for t, b in plan if t == "au"])
    assert len(set(au.tolist())) == 40 and au.max() < 50
    again = epoch_plan(TaskSchedule("batch"), 3, sizes, batch_size=8, seed=1, max_frames=40)
    assert all(t1 == t2 and np.array_equal(b1, b2) for (t1, b1), (t2, b2) in zip(plan, again))
    other = epoch_plan(TaskSchedule("batch"), 4, sizes, batch_size=8, seed=1, max_frames=40)
    assert not np.array_equal(plan[1][1], other[1][1])
    epochs = [epoch_plan(TaskSchedule("epoch"), e, sizes, 8, seed=1) for e in range(2)]
    assert {t for t, _ in epochs[0]} == {"expr"} and {t for t, _ in epochs[1]} == {"au"}
    assert [len(b) for b in split_batches(np.arange(10), 4, min_batch=3)] == [4, 4]
    assert [len(b) for b in split_batches(np.arange(11), 4, min_batch=3)] == [4, 4, 3]


def test_shard_and_unshard_round_trip() -> None:
    rows = np.arange(11 * 2).reshape(11, 2)
    parts = [np.asarray(ddp.shard(rows, DistContext(rank=r, world_size=3))) for r in range(3)]
    assert sum(len(p) for p in parts) == 11
    np.testing.assert_array_equal(ddp.unshard(parts, 11), rows)
    assert ddp.context_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == DistContext(1, 2, 1)
    with pytest.raises(ValueError, match="rank"):
        DistContext(rank=2, world_size=2)


# -- config -----------------------------------------------------------------------------------

def test_config_names_bad_values() -> None:
    with pytest.raises(ConfigError, match="pos_weight: needs 12"):
        VisualTrainConfig(pos_weight=(1.0, 2.0))
    with pytest.raises(ConfigError, match="batch_size"):
        VisualTrainConfig(batch_size=1)


# -- training ---------------------------------------------------------------------------------

def test_training_publishes_best_model_and_metrics(trained: tuple[Path, Any], tiny_prepared: Path,
                                                   tiny_frames: Path) -> None:
    out, result = trained
    metrics = result.metrics
    assert metrics["epochs"] == 2 and 1 <= metrics["best_epoch"] <= 2 and result.resumed_from is None
    for frames in ("face_frames", "all_frames"):
        report, baseline = metrics["validation"][frames], metrics["baseline"][frames]
        for task in ("au", "expr"):
            assert set(report[task]) == set(baseline[task]) == {"f1", "acc", "score"}
        assert set(report["va"]) == set(baseline["va"]) == {"ccc_valence", "ccc_arousal", "score",
                                                             "frames_valence", "frames_arousal"}
        assert math.isfinite(report["va"]["score"]) and baseline["va"]["score"] == 0.0   # a constant has CCC 0
        assert report["score"] == pytest.approx(np.mean([report[t]["score"] for t in ("au", "expr", "va")]))
        assert baseline["au"]["f1"] == 0.0  # all-negative predictions have no true positive
    # the tiny preset has labelled frames without a face crop: all_frames adds them
    face, every = metrics["validation"]["face_frames"]["frames"], metrics["validation"]["all_frames"]["frames"]
    assert face == {task: metrics["frames"][f"{task}_val"] for task in ("au", "expr", "va")}
    assert every["au"] > face["au"] and every["expr"] > face["expr"] and every["va"] > face["va"]
    assert result.history[0]["loss"].keys() == {"expr", "au", "va"}   # the VA head trains in the rotation

    manifest = read_manifest(tiny_prepared / "manifest.json")
    selection = metrics["selection"]
    assert selection["mode"] == "holdout" and selection["frames"] == "face_frames" and selection["videos"]
    assert [e["epoch"] for e in selection["per_epoch"]] == [1, 2]
    kept = selection["per_epoch"][metrics["best_epoch"] - 1]
    assert kept["selection_score"] == max(e["selection_score"] for e in selection["per_epoch"])
    assert kept["validation_score"] == metrics["validation"]["face_frames"]["score"]
    assert all(metrics["frames"][f"{task}_selection"] > 0 for task in ("au", "expr", "va"))
    held = set(selection["subjects"]["expr"])
    labels = read_all_labels(tiny_prepared / "labels.h5")
    train_expr = np.concatenate([labels[r.name].expr[labels[r.name].face_present]
                                 for r in manifest.in_split("expr", "train") if r.name not in held])
    assert metrics["baseline"]["expr_majority_class"] == np.bincount(train_expr[train_expr >= 0]).argmax()

    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["arch"] == VisualTrainConfig(**TINY).arch() and ckpt["epoch"] == metrics["best_epoch"]
    model = build_from_checkpoint(ckpt).eval()
    au, expr, va = model(torch.zeros(2, 3, 112, 112))
    assert au.shape == (2, 12) and expr.shape == (2, 7) and va.shape == (2, 2) and torch.isfinite(au).all()
    assert not list(out.glob(".model.pt.tmp-*"))

    # the AU thresholds: the per-AU search over the published model's probabilities on the held-out
    # face frames (never the validation frames), in model.pt and the metrics alike
    held_out = select_subject_frames(manifest, read_frame_labels(tiny_prepared / "labels.h5", tiny_frames),
                                     selection["subjects"])
    images = torch.stack([image for image, _, _ in FrameDataset(tiny_frames, held_out).__getitems__(
        list(range(len(held_out))))])
    with torch.no_grad():
        logits = model(to_model_input(images))[0].numpy()
    expected = search_thresholds(probabilities(logits), held_out.au, "per_au", "")
    assert ckpt["au_thresholds"] == metrics["au_thresholds"]
    assert ckpt["au_thresholds"]["values"] == pytest.approx(list(expected.values))
    assert ckpt["au_thresholds"]["status"] == list(expected.status)


def _fixed_batch(prepared: Path, frames: Path, task: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training frames of ``task``, spread over its subjects: (images, au, expr)."""
    manifest = read_manifest(prepared / "manifest.json")
    fs = select_frames(manifest, read_all_labels(prepared / "labels.h5"), task, "train")
    picks = np.linspace(0, len(fs) - 1, n).astype(int).tolist()
    images, au, expr = zip(*FrameDataset(frames, fs).__getitems__(picks))
    return torch.stack(images), torch.stack(au), torch.stack(expr)


def test_training_steps_fit_a_small_set_far_beyond_the_best_constant(tiny_prepared: Path, tiny_frames: Path) -> None:
    # The trainer's own step (active-head loss, alternating update, schedule) on 32 frames per task,
    # without augmentation: a model that learns fits them within a few steps; one that does not
    # update stays near the best constant prediction on those same frames. (One epoch of the tiny
    # preset does not generalise to its validation subjects, so the margin is on the fitted frames.)
    no_augment = AugmentConfig(flip_prob=0.0, crop_scale=0.0, hue=0.0, saturation=0.0, lightness=0.0)
    cfg = VisualTrainConfig(**{**TINY, "width_mult": 0.125, "lr": 0.02, "schedule": "constant", "augment": no_augment})
    trainer = visual._VisualRun(cfg, torch.device("cpu"), DistContext(), total_steps=24, pos_weight=torch.ones(12))
    batches = {task: _fixed_batch(tiny_prepared, tiny_frames, task, 32) for task in ("au", "expr")}
    for step in range(24):
        task = ("au", "expr")[step % 2]
        images, au, expr = batches[task]
        trainer.step(task, images, au if task == "au" else expr, epoch=1, batch=step + 1)
    model = trainer.model.eval()
    with torch.no_grad():
        au_logits = model(to_model_input(batches["au"][0]))[0]
        expr_logits = model(to_model_input(batches["expr"][0]))[1]
    au_true, expr_true = batches["au"][1].numpy(), batches["expr"][2].numpy()
    au = au_metrics(au_true, (au_logits > 0).numpy().astype(np.int64))
    expr = expr_metrics(expr_true, expr_logits.argmax(1).numpy())
    assert expr["score"] > trivial_expr_score(expr_true) + 0.3, expr
    assert au["score"] > trivial_au_score(au_true) + 0.1, au


def test_interrupted_run_resumes_mid_epoch_to_the_same_weights_and_metrics(
    trained: tuple[Path, Any], tiny_prepared: Path, tiny_frames: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, uninterrupted = trained
    real_step = loop.multitask_step
    calls = {"n": 0}

    def failing_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 9:  # epoch 1 has 6 batches; the last checkpoint is after batch 2 of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "multitask_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_prepared, tiny_frames, tmp_path, VisualTrainConfig(**TINY), checkpoint_every=2)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(loop, "multitask_step", real_step)
    # the same seeds give the same result: the rerun matches the uninterrupted run bit for bit
    resumed = _run(tiny_prepared, tiny_frames, tmp_path, VisualTrainConfig(**TINY), checkpoint_every=2)
    assert resumed.resumed_from == (1, 2)
    assert _digest(resumed.model.state_dict()) == _digest(uninterrupted.model.state_dict())
    assert resumed.metrics == uninterrupted.metrics


def test_finished_run_republishes_without_training(
    trained: tuple[Path, Any], tiny_prepared: Path, tiny_frames: Path
) -> None:
    out, first = trained
    (out / "model.pt").unlink()
    again = _run(tiny_prepared, tiny_frames, out, VisualTrainConfig(**TINY))
    assert again.resumed_from == (2, 0) and (out / "model.pt").is_file()
    assert again.metrics == first.metrics


def test_saved_state_is_only_resumed_with_the_same_config_and_inputs(
    trained: tuple[Path, Any], tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(tiny_prepared / "manifest.json")
    labels = tiny_prepared / "labels.h5"
    base = visual.data_key(manifest, labels, tiny_frames, None)
    assert base == visual.data_key(manifest, labels, tiny_frames, None)
    fewer = dataclasses.replace(manifest, subjects=manifest.subjects[1:])
    assert base != visual.data_key(fewer, labels, tiny_frames, None)
    out, _ = trained
    shutil.copytree(out / "work", tmp_path / "work")
    other = _run(tiny_prepared, tiny_frames, tmp_path, VisualTrainConfig(**{**TINY, "epochs": 1, "lr": 0.01}))
    assert other.resumed_from is None and other.metrics["epochs"] == 1
    assert [h["epoch"] for h in other.history] == [1]


def test_wrong_pretrained_checkpoint_is_a_clear_error(tiny_prepared: Path, tiny_frames: Path, tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "layer4.9.bn1.weight": torch.zeros(3)}, path)
    cfg = VisualTrainConfig(**{**TINY, "width_mult": 1.0, "backbone_init": "pretrained"})
    with pytest.raises(CheckpointMismatchError, match=str(path)):
        _run(tiny_prepared, tiny_frames, tmp_path, cfg, pretrained=path)


def test_pretrained_init_without_a_backbone_file_is_a_clear_error(tiny_prepared: Path, tiny_frames: Path,
                                                                   tmp_path: Path) -> None:
    cfg = VisualTrainConfig(**{**TINY, "backbone_init": "pretrained"})
    with pytest.raises(ValueError, match="finetune_visual.backbone_init is pretrained but no pretrained backbone file"):
        _run(tiny_prepared, tiny_frames, tmp_path, cfg)
    assert not (tmp_path / "model.pt").exists()


# -- DDP ----------------------------------------------------------------------------------------

def _join(rank: int, world: int, store: str) -> AbstractContextManager:
    """Join a gloo group through a file store (no rendezvous socket), with pickled collectives refused."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "GLOO_SOCKET_IFNAME": "lo"})
    forbid_pickled_collectives()
    torch.set_num_threads(1)
    return ddp.distributed("cpu", init_method=f"file://{store}")


def _ddp_worker(rank: int, world: int, store: str, prepared: str, frames: str, out: str, cfg: dict) -> None:
    with _join(rank, world, store) as (ctx, device):
        result = _run(Path(prepared), Path(frames), Path(out), VisualTrainConfig(**cfg), device=device, dist=ctx)
    Path(out, f"rank{rank}.digest").write_text(_digest(result.model.state_dict()))


@pytest.mark.slow
def test_ddp_two_processes_keep_identical_weights(tiny_prepared: Path, tiny_frames: Path, tmp_path: Path) -> None:
    cfg = {**TINY, "epochs": 1}
    store = str(tmp_path.with_name(tmp_path.name + "-store"))  # beside the outputs, which are listed
    mp.spawn(_ddp_worker, args=(2, store, str(tiny_prepared), str(tiny_frames), str(tmp_path), cfg),
             nprocs=2, join=True)
    digests = {(tmp_path / f"rank{r}.digest").read_text() for r in range(2)}
    assert len(digests) == 1
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert _digest(ckpt["state_dict"]) == digests.pop()  # one epoch: the best is the final model
    assert (tmp_path / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.pt", "rank0.digest",
                                                          "rank1.digest", "work"]


def _ddp_diverging_worker(rank: int, world: int, store: str, prepared: str, frames: str, out: str,
                          cfg: dict) -> None:
    with _join(rank, world, store) as (ctx, device):
        try:
            _run(Path(prepared), Path(frames), Path(out), VisualTrainConfig(**cfg), device=device, dist=ctx)
        except DivergedError as exc:
            Path(out, f"rank{rank}.error").write_text(str(exc))


@pytest.mark.slow
def test_ddp_processes_stop_together_when_training_diverges(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    cfg = {**TINY, "epochs": 1, "lr": 1e8}
    store = str(tmp_path.with_name(tmp_path.name + "-store"))  # beside the outputs, which are listed
    mp.spawn(_ddp_diverging_worker, args=(2, store, str(tiny_prepared), str(tiny_frames), str(tmp_path), cfg),
             nprocs=2, join=True)
    errors = {(tmp_path / f"rank{r}.error").read_text() for r in range(2)}
    assert len(errors) == 1 and errors.pop().startswith("finetune_visual: training diverged at epoch 1, batch")
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.json").exists()


# -- backbone learning-rate multiplier and warm-up ------------------------------------------------

def _group_lrs(run: visual._VisualRun, steps: int) -> list[tuple[float, float]]:
    """(backbone, heads) learning rates of each of the next ``steps`` optimiser steps."""
    seen = []
    for _ in range(steps):
        seen.append(tuple(group["lr"] for group in run.optimizer.param_groups))
        run.optimizer.step()
        run.scheduler.step()
    return seen


def _recipe_run(**change: Any) -> visual._VisualRun:
    cfg = VisualTrainConfig(**{**TINY, "epochs": 2, "lr": 0.1, **change})
    return visual._VisualRun(cfg, torch.device("cpu"), DistContext(), total_steps=20, pos_weight=torch.ones(12))


def test_backbone_learns_at_its_multiplier_of_the_heads_lr_through_the_schedule() -> None:
    run = _recipe_run(backbone_lr_mult=0.1)
    backbone, heads = (group["params"] for group in run.optimizer.param_groups)
    assert {id(p) for p in backbone} == {id(p) for p in run.model.backbone.parameters()}
    assert {id(p) for p in heads} == {id(p) for p in [*run.model.au_head.parameters(),
                                                      *run.model.expr_head.parameters(),
                                                      *run.model.va_head.parameters()]}
    lrs = _group_lrs(run, 20)
    assert lrs[0] == pytest.approx((0.01, 0.1)) and lrs[10][1] < 0.1
    assert all(b == pytest.approx(0.1 * h) for b, h in lrs)   # the ratio holds at every step of the cosine
    # the default keeps one learning rate for all, as before the multiplier existed
    assert all(b == h for b, h in _group_lrs(_recipe_run(), 20))


def test_warmup_rises_linearly_then_follows_the_schedule_and_resumes() -> None:
    run = _recipe_run(backbone_lr_mult=0.5, warmup_epochs=0.5)   # 20 steps in 2 epochs: 5 warm-up steps
    first = _group_lrs(run, 7)
    assert [h for _, h in first[:5]] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert [b for b, _ in first[:5]] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert first[5] == pytest.approx((0.05, 0.1)) and first[6][1] == pytest.approx(0.05 * (1 + math.cos(math.pi / 15)))
    saved, optimizer = run.extra_state(), run.optimizer.state_dict()   # what LoopState saves
    rest = _group_lrs(run, 13)
    resumed = _recipe_run(backbone_lr_mult=0.5, warmup_epochs=0.5)
    resumed.optimizer.load_state_dict(optimizer)   # as LoopState.resume restores it
    resumed.load_extra(saved)
    assert np.allclose(_group_lrs(resumed, 13), rest, rtol=1e-12, atol=0)
    constant = _group_lrs(_recipe_run(warmup_epochs=1.0, schedule="constant"), 20)
    assert [h for _, h in constant] == pytest.approx([0.01 * (i + 1) for i in range(10)] + [0.1] * 10)


def test_config_checks_the_multiplier_and_warmup() -> None:
    with pytest.raises(ConfigError, match="backbone_lr_mult: must be > 0, got 0.0"):
        VisualTrainConfig(backbone_lr_mult=0.0)
    with pytest.raises(ConfigError, match=r"warmup_epochs: must be in \[0, epochs \(5\)\], got 6.0"):
        VisualTrainConfig(warmup_epochs=6.0)


def test_random_backbone_trains_with_a_multiplier_and_warmup(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[float, ...]] = []
    real = visual._VisualRun.step

    def step(self: visual._VisualRun, *args: Any, **kwargs: Any) -> float:
        seen.append(tuple(group["lr"] for group in self.optimizer.param_groups))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(visual._VisualRun, "step", step)
    cfg = VisualTrainConfig(**{**TINY, "epochs": 1, "backbone_init": "random", "backbone_lr_mult": 0.25,
                               "warmup_epochs": 0.5})
    result = _run(tiny_prepared, tiny_frames, tmp_path, cfg)
    assert (tmp_path / "model.pt").is_file() and result.best_epoch == 1
    # 6 steps (2 batches of each of the 3 tasks): 3 of warm-up, then the cosine over the other 3
    # (1, 3/4, then 1/4 of lr)
    assert len(seen) == 6
    assert [h for _, h in seen] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05, 0.05, 0.0375, 0.0125])
    assert all(b == pytest.approx(0.25 * h) for b, h in seen)


# -- valence-arousal ----------------------------------------------------------------------------

def _head_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: torch.cat([p.detach().flatten() for p in head.parameters()]) for name, head in
            (("au", model.au_head), ("expr", model.expr_head), ("va", model.va_head))}


def test_va_only_frames_teach_the_va_head_and_leave_the_other_heads_alone(
    tiny_prepared: Path, tiny_frames: Path
) -> None:
    # Frames that carry only VA labels (AU and expression unlabelled) train through the trainer's own
    # step: the VA head fits them, the AU and expression heads do not move.
    manifest = read_manifest(tiny_prepared / "manifest.json")
    fs = select_frames(manifest, read_frame_labels(tiny_prepared / "labels.h5", tiny_frames), "va", "train")
    picks = np.linspace(0, len(fs) - 1, 32).astype(int)
    va_only = dataclasses.replace(fs.subset(picks), au=np.full((32, 12), -1, np.int8), expr=np.full(32, -1, np.int8))
    assert has_labels(va_only, "va").all() and not has_labels(va_only, "au").any()
    images = torch.stack([image for image, _, _ in FrameDataset(tiny_frames, va_only).__getitems__(list(range(32)))])
    targets = torch.from_numpy(va_only.va)
    no_augment = AugmentConfig(flip_prob=0.0, crop_scale=0.0, hue=0.0, saturation=0.0, lightness=0.0)
    cfg = VisualTrainConfig(**{**TINY, "width_mult": 0.125, "lr": 0.02, "schedule": "constant", "augment": no_augment})
    run = visual._VisualRun(cfg, torch.device("cpu"), DistContext(), total_steps=20, pos_weight=torch.ones(12))
    before = _head_weights(run.model)
    losses = [run.step("va", images, targets, epoch=1, batch=step + 1) for step in range(20)]
    after = _head_weights(run.model)
    assert torch.equal(before["au"], after["au"]) and torch.equal(before["expr"], after["expr"])
    assert not torch.equal(before["va"], after["va"])
    assert losses[-1] < 0.6 * losses[0], losses   # 1 - CCC falls: the VA head learns these frames


def _without_va(prepared: Path, out: Path) -> Path:
    """A copy of the ``prepare`` output as an Aff-Wild2 copy without VA_Set gives it: no VA labels, no VA split."""
    from pipeline.data.labels_store import write_labels
    from pipeline.data.manifest import write_manifest

    out.mkdir()
    manifest = read_manifest(prepared / "manifest.json")
    records = tuple(dataclasses.replace(r, va_split=None) for r in manifest.subjects)
    write_manifest(dataclasses.replace(manifest, subjects=records), out / "manifest.json")
    labels = read_all_labels(prepared / "labels.h5")
    write_labels(out / "labels.h5", {name: dataclasses.replace(item, va=None) for name, item in labels.items()})
    return out


def test_a_dataset_without_va_labels_trains_au_and_expr_and_reports_no_va(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepared = _without_va(tiny_prepared, tmp_path / "prepared")
    with caplog.at_level("INFO", logger="pipeline.train.visual"):
        result = _run(prepared, tiny_frames, tmp_path, VisualTrainConfig(**{**TINY, "epochs": 1}))
    skipped = [r.getMessage() for r in caplog.records if "valence-arousal" in r.getMessage()]
    assert skipped == [f"{prepared / 'labels.h5'}: no training face frame carries a valence-arousal label; "
                       "the va head is not trained"]
    assert result.history[0]["loss"].keys() == {"expr", "au"}
    assert not any(key.startswith("va_") for key in result.metrics["frames"])
    for report in (result.metrics["validation"], result.metrics["baseline"], result.history[0]["selection"]):
        for frames in ("face_frames", "all_frames"):
            assert "va" not in report[frames] and report[frames]["frames"].keys() == {"au", "expr"}
            assert report[frames]["score"] == pytest.approx((report[frames]["au"]["score"]
                                                             + report[frames]["expr"]["score"]) / 2)
