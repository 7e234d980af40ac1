"""The sequence trainer: learns a tiny generated cache, publishes its outputs, resumes exactly."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import zarr
from _baselines import trivial_au_score, trivial_expr_score

from pipeline.config import ConfigError, from_dict
from pipeline.data.manifest import read_manifest
from pipeline.metrics import va_metrics
from pipeline.model_files.onnx_export import ParityError, make_session, read_metadata
from pipeline.inference.sequence import load_sequence_runner, onnx_run_fn, sliding_window_logits, torch_run_fn
from pipeline.model_files.sequence import build_from_checkpoint
from pipeline.models.sequence import SequenceModel
from pipeline.train.loop import DivergedError, TrainResult
from pipeline.train.selection import SelectionConfig
from pipeline.train.sequence import SequenceTrainConfig, publish_outputs, train_sequence
from pipeline.train.sequence_synth import SyntheticCacheConfig, write_synthetic_cache

CONFIG = SequenceTrainConfig(
    modalities="both", window=16, stride=8, layers=1, heads=2, d_model=32, dropout=0.0,
    epochs=6, batch_size=8, lr=0.05, momentum=0.9, alternation="batch", seed=0,
)


@pytest.fixture(scope="module")
def cache_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    # two validation videos: with one, a few expression segments make the trivial baseline too lucky
    config = SyntheticCacheConfig(n_videos=8, min_frames=40, max_frames=70, validation_fraction=0.25, seed=1)
    return write_synthetic_cache(tmp_path_factory.mktemp("cache"), config)


def run(paths: tuple[Path, Path, Path], out: Path, config: SequenceTrainConfig, work: str = "work") -> TrainResult:
    manifest, visual, audio = paths
    return train_sequence(manifest, visual, audio, out / "sequence", out / "metrics.json", config, work_dir=out / work)


@pytest.fixture(scope="module")
def trained(cache_paths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    run(cache_paths, out, CONFIG)
    return out


def history(out: Path, work: str = "work") -> list[dict]:
    return torch.load(out / work / "state.pt", weights_only=True)["history"]


def test_loss_falls_on_a_tiny_cache(trained: Path) -> None:
    entries = history(trained)
    assert len(entries) == CONFIG.epochs
    for task in ("au", "expr"):
        first, last = entries[0]["loss"][task], entries[-1]["loss"][task]
        assert np.isfinite(first) and last < 0.7 * first, (task, first, last)
    # 1 - CCC of batches of a few windows is noisy, and the shared trunk also follows AU and EXPR:
    # the VA loss falls, not steadily (what the VA head learns is checked on whole videos below)
    va = [e["loss"]["va"] for e in entries]
    assert np.isfinite(va).all() and min(va[1:]) < 0.85 * va[0], va


def _training_va(paths: tuple[Path, Path, Path], model_pt: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) (N, 2) of the VA training subjects, by the published model's windows."""
    manifest, visual, audio = paths
    runner = load_sequence_runner(model_pt, device="cpu")
    vstore, astore = zarr.open_group(visual, mode="r"), zarr.open_group(audio, mode="r")
    labels, predictions = [], []
    for record in read_manifest(manifest).in_split("va", "train"):
        v, a = vstore[record.name], astore[record.video]
        *_, va = runner.video_logits(v["embedding"][:], a["embedding"][:], v["face_present"][:],
                                     a["audio_present"][:])
        labels.append(v["va"][:])
        predictions.append(va)
    return np.concatenate(labels), np.concatenate(predictions)


def test_the_model_learns_valence_and_arousal(trained: Path, cache_paths) -> None:
    # the generated VA is each expression's point plus a slow drift: the VA head learns it from the
    # same embeddings, so its CCC on the training videos beats any constant prediction (CCC 0)
    labels, predictions = _training_va(cache_paths, trained / "sequence" / "model.pt")
    assert np.abs(predictions).max() <= 1.0
    constant = va_metrics(labels, np.broadcast_to(np.nanmean(labels, axis=0), labels.shape))
    learnt = va_metrics(labels, predictions)
    assert learnt["score"] > constant["score"] + 0.2, (learnt, constant)
    report = json.loads((trained / "metrics.json").read_text())["validation"]
    for frames in ("face_frames", "all_frames"):
        va = report[frames]["va"]
        assert np.isfinite(va["score"]) and va["score"] == 0.5 * (va["ccc_valence"] + va["ccc_arousal"])
        assert report[frames]["frames"]["va"] == va["frames_valence"] > 0
        assert report[frames]["score"] == pytest.approx(np.mean([report[frames][t]["score"]
                                                                 for t in ("au", "expr", "va")]))


def _validation_labels(paths: tuple[Path, Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    manifest, visual, _ = paths
    store = zarr.open_group(visual, mode="r")
    names = {task: [r.name for r in read_manifest(manifest).in_split(task, "validation")] for task in ("au", "expr")}
    return (np.concatenate([store[n]["au"][:] for n in names["au"]]),
            np.concatenate([store[n]["expr"][:] for n in names["expr"]]))


def test_the_model_beats_the_best_constant_prediction(trained: Path, cache_paths) -> None:
    # Six epochs on the generated cache (expression and AU prototypes plus noise) learn the expression
    # almost fully and the AUs partly; an untrained or label-blind model scores near the baseline.
    metrics = json.loads((trained / "metrics.json").read_text())["validation"]["all_frames"]
    au_true, expr_true = _validation_labels(cache_paths)
    assert metrics["expr"]["score"] > trivial_expr_score(expr_true) + 0.3, metrics
    assert metrics["au"]["score"] > trivial_au_score(au_true) + 0.05, metrics


def test_outputs_model_onnx_and_metrics(trained: Path, cache_paths) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"validation", "selection", "epochs", "best_epoch", "au_thresholds"}
    for report in metrics["validation"].values():
        assert set(report) == {"au", "expr", "va", "score", "frames"}
        assert all(set(report[task]) == {"f1", "acc", "score"} for task in ("au", "expr"))
        assert set(report["va"]) == {"ccc_valence", "ccc_arousal", "score", "frames_valence", "frames_arousal"}
        assert set(report["frames"]) == {"au", "expr", "va"}
    ckpt = torch.load(trained / "sequence" / "model.pt", weights_only=True)
    assert {"arch", "state_dict", "modalities", "window", "stride"} <= set(ckpt)
    assert (ckpt["modalities"], ckpt["window"], ckpt["stride"]) == ("both", 16, 8)
    meta = read_metadata(trained / "sequence" / "sequence.onnx")
    assert (meta["modalities"], meta["window"], meta["stride"], meta["feature_dim"]) == ("both", 16, 8, 1026)
    assert [b["name"] for b in meta["feature_layout"]] == ["visual", "face_present", "audio", "audio_present"]
    # the same AU thresholds in both files and the metrics; the runner of either file decides by them
    assert ckpt["au_thresholds"] == meta["au_thresholds"] == metrics["au_thresholds"]
    assert metrics["au_thresholds"]["strategy"] == "per_au"
    for name in ("model.pt", "sequence.onnx"):
        runner = load_sequence_runner(trained / "sequence" / name, device="cpu")
        assert runner.au_thresholds.values == tuple(metrics["au_thresholds"]["values"])
    graph = onnx.load(trained / "sequence" / "sequence.onnx").graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["au_logits", "expr_logits", "va_pred"]
    # ONNX and torch give the same whole-video outputs, on a video longer and one shorter than a window
    model = build_from_checkpoint(ckpt)
    session = make_session(trained / "sequence" / "sequence.onnx", device="cpu")
    features = np.random.default_rng(0).normal(size=(37, 1026)).astype(np.float32)
    for n in (37, 9):
        a = sliding_window_logits(torch_run_fn(model), features[:n], 16, 8)
        b = sliding_window_logits(onnx_run_fn(session), features[:n], 16, 8)
        assert len(a) == len(b) == 3
        for torch_output, onnx_output in zip(a, b, strict=True):
            np.testing.assert_allclose(torch_output, onnx_output, atol=1e-4)


def test_the_best_epoch_on_the_held_out_videos_is_published(trained: Path, cache_paths) -> None:
    entries = history(trained)
    best = max(entries, key=lambda e: e["score"])
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["validation"] == best["metrics"] and metrics["best_epoch"] == best["epoch"]
    selection = metrics["selection"]
    assert selection["mode"] == "holdout" and len(selection["videos"]) == 1
    assert [e["selection_score"] for e in selection["per_epoch"]] == [e["score"] for e in entries]
    assert [e["selection_score"] for e in selection["per_epoch"]] == [
        e["selection"]["face_frames"]["score"] for e in entries]
    # the held-out video is a training video of both tasks, and it is not trained on
    manifest = read_manifest(cache_paths[0])
    for task in ("au", "expr"):
        assert {manifest.by_name(n).split(task) for n in selection["subjects"][task]} == {"train"}
    # faceless frames are scored in all_frames only
    face, every = (metrics["validation"][s]["frames"] for s in ("face_frames", "all_frames"))
    assert 0 < face["expr"] < every["expr"] and 0 < face["au"] < every["au"]


def test_each_selection_mode_keeps_its_epoch(cache_paths, tmp_path: Path) -> None:
    config = replace(CONFIG, epochs=3)
    for mode in ("validation", "last"):
        manifest, visual, audio = cache_paths
        result = train_sequence(manifest, visual, audio, tmp_path / mode, tmp_path / f"{mode}.json", config,
                                work_dir=tmp_path / f"work-{mode}", selection=SelectionConfig(mode=mode))
        scores = [h["metrics"]["face_frames"]["score"] for h in result.history]
        assert result.best_epoch == (1 + scores.index(max(scores)) if mode == "validation" else 3)
        assert result.metrics["selection"]["mode"] == mode and result.metrics["selection"]["videos"] == []


def test_a_longer_run_continues_a_shorter_one_exactly(trained: Path, cache_paths, tmp_path: Path) -> None:
    run(cache_paths, tmp_path, replace(CONFIG, epochs=2))
    assert len(history(tmp_path)) == 2
    run(cache_paths, tmp_path, CONFIG)
    resumed = torch.load(tmp_path / "sequence" / "model.pt", weights_only=True)["state_dict"]
    straight = torch.load(trained / "sequence" / "model.pt", weights_only=True)["state_dict"]
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)
    assert [e["loss"] for e in history(tmp_path)] == [e["loss"] for e in history(trained)]


def test_other_params_start_over(cache_paths, tmp_path: Path) -> None:
    run(cache_paths, tmp_path, replace(CONFIG, epochs=1))
    run(cache_paths, tmp_path, replace(CONFIG, epochs=1, lr=0.01))
    assert len(history(tmp_path)) == 1


def test_visual_only_model_and_epoch_alternation(cache_paths, tmp_path: Path) -> None:
    config = replace(CONFIG, modalities="visual", alternation="epoch", epochs=3, positional="sinusoidal")
    metrics = run(cache_paths, tmp_path, config).metrics
    assert set(metrics["validation"]["face_frames"]) == {"au", "expr", "va", "score", "frames"}
    assert read_metadata(tmp_path / "sequence" / "sequence.onnx")["feature_dim"] == 513
    # an expr epoch, then an au epoch, then a va epoch
    trained_tasks = [[t for t, loss in e["loss"].items() if loss is not None] for e in history(tmp_path)]
    assert trained_tasks == [["expr"], ["au"], ["va"]]


@pytest.fixture(scope="module")
def no_va_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    # the same videos, written as a dataset without VA_Set: no va_split in the manifest, no va arrays
    config = SyntheticCacheConfig(n_videos=8, min_frames=40, max_frames=70, validation_fraction=0.25, seed=1,
                                  with_va=False)
    return write_synthetic_cache(tmp_path_factory.mktemp("no_va"), config)


def test_a_dataset_without_va_trains_au_and_expr_as_before(no_va_paths, cache_paths, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    config = replace(CONFIG, epochs=2)
    with caplog.at_level(logging.INFO):
        metrics = run(no_va_paths, tmp_path / "no_va", config).metrics
    skipped = [r.getMessage() for r in caplog.records if "va task is skipped" in r.getMessage()]
    assert skipped == ["train_sequence: no VA labels in the training split; the va task is skipped"]
    for report in metrics["validation"].values():
        assert set(report) == {"au", "expr", "score", "frames"} and set(report["frames"]) == {"au", "expr"}
    assert set(history(tmp_path / "no_va")[0]["loss"]) == {"expr", "au"}
    # AU and expression train exactly as on the same videos with VA labels and VA left out of the rotation
    with_va = run(cache_paths, tmp_path / "va", replace(config, max_windows=None), "work-va")
    assert with_va.history[0]["loss"]["va"] is not None
    without = torch.load(tmp_path / "no_va" / "sequence" / "model.pt", weights_only=True)["state_dict"]
    assert without["va_head.weight"].abs().sum() > 0   # initialised, never trained: its grad stays None


def test_an_absurd_lr_stops_training_and_publishes_nothing(cache_paths, tmp_path: Path) -> None:
    with pytest.raises(DivergedError, match=r"train_sequence: training diverged at epoch 1, batch \d+: .*"
                                            r"Try a lower train_sequence\.lr or set train_sequence\.max_grad_norm"):
        run(cache_paths, tmp_path, replace(CONFIG, epochs=2, lr=1e8))
    assert not (tmp_path / "sequence").exists() and not (tmp_path / "metrics.json").exists()


def test_config_from_params_rejects_bad_values() -> None:
    params = {"modalities": "both", "window": 30}
    assert from_dict(SequenceTrainConfig, params).window == 30
    with pytest.raises(ConfigError, match="modalities"):
        from_dict(SequenceTrainConfig, {"modalities": "video"})
    with pytest.raises(ValueError, match="window"):
        SequenceTrainConfig(window=0)
    with pytest.raises(ConfigError, match=r"train_sequence\.va_mse_weight: must be a finite number >= 0, got -1"):
        from_dict(SequenceTrainConfig, {"va_mse_weight": -1.0}, where="train_sequence")
    with pytest.raises(ConfigError, match=r"train_sequence\.max_windows: must be >= 1 or null, got 0"):
        from_dict(SequenceTrainConfig, {"max_windows": 0}, where="train_sequence")


def test_va_mse_weight_changes_the_va_loss_only(cache_paths, tmp_path: Path) -> None:
    plain = run(cache_paths, tmp_path / "plain", replace(CONFIG, epochs=1)).history[0]["loss"]
    mse = run(cache_paths, tmp_path / "mse", replace(CONFIG, epochs=1, va_mse_weight=5.0)).history[0]["loss"]
    assert mse["va"] > plain["va"]   # the same first batches, plus a positive MSE term


def test_max_windows_caps_each_task_per_epoch(cache_paths, tmp_path: Path) -> None:
    # batch mode rotates the three tasks until the longest is done: capping each at 2 batches makes
    # the epoch 6 steps, and the curve of each task has as many losses as its batches
    result = run(cache_paths, tmp_path, replace(CONFIG, epochs=1, max_windows=2 * CONFIG.batch_size))
    assert result.history[0]["loss"]["va"] is not None
    from pipeline.train import sequence as trainer
    from pipeline.train.sequence_data import load_sequence_cache
    manifest, visual, audio = cache_paths
    cache = load_sequence_cache(read_manifest(manifest), visual, audio, ["video0", "video1"], "both")
    loader = trainer._loader(cache, ["video0", "video1"], "va", replace(CONFIG, max_windows=3))
    assert len(loader) == 1 and sum(len(b.features) for b in loader) == 3


def test_parity_tolerance_comes_from_train_sequence_params(tmp_path: Path) -> None:
    config = from_dict(SequenceTrainConfig, {"window": 4, "d_model": 16, "heads": 2, "parity_rtol": 1e-12})
    torch.manual_seed(0)
    with pytest.raises(ParityError, match=r"sequence.onnx: output '\w+_logits' differs .* > train_sequence.parity_rtol"):
        publish_outputs(SequenceModel(config.arch()), config, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()
    with pytest.raises(ConfigError, match="train_sequence.parity_rtol"):
        from_dict(SequenceTrainConfig, {"parity_rtol": -1.0}, where="train_sequence")
    # the tolerance is not part of the model: model.pt is the same whatever its value
    loose = replace(config, parity_rtol=1e-3)
    publish_outputs(SequenceModel(loose.arch()), loose, tmp_path / "loose")
    assert "parity_rtol" not in torch.load(tmp_path / "loose" / "model.pt", weights_only=True)["config"]
