"""train-audio: the fused model learns what only the audio carries, resumes exactly, and publishes its files."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from _audio_media import EXPR_PITCH_HZ, build_audio_dataset, expression_runs, expression_va, tone_track
from _baselines import trivial_au_score, trivial_expr_score

import pipeline.train.audio as audio_train
from pipeline.audio.decode import AudioTrack
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import track_audio
from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.metrics import va_metrics
from pipeline.fsio import OUTPUT_MARKER
from pipeline.model_files.audio import load_audio_config, load_fusion_head, load_tdnn
from pipeline.model_files.loading import model_thresholds
from pipeline.model_files.onnx_export import ParityError, read_metadata
from pipeline.models.fusion import FusionConfig
from pipeline.models.tdnn import TDNNConfig
from pipeline.train.audio import (
    AudioTrainConfig, SubjectData, build_model, fit, make_batch, publish_outputs, task_segments, train_audio,
    visual_only_metrics,
)
from pipeline.train.loop import DivergedError
from pipeline.train.splits import Splits

AUDIO = AudioConfig(context_s=0.2)


def tiny_config(**overrides) -> AudioTrainConfig:
    base = dict(
        audio=AUDIO, tdnn=TDNNConfig(channels=(16, 16, 32), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1)),
        fusion=FusionConfig(hidden=32), epochs=6, segment_frames=2, batch_segments=32, lr=1e-3, seed=0,
    )
    return AudioTrainConfig(**{**base, **overrides})


def _subject(name: str, seed: int, n_frames: int = 150, fps: float = 25.0) -> SubjectData:
    """A subject whose expression is audible (tone pitch) but invisible (noise embeddings)."""
    rng = np.random.default_rng(seed)
    expr = expression_runs(n_frames, seed)
    samples = tone_track(expr, fps, 16000, seed)
    audio = track_audio(AudioTrack(samples, 16000, 0.0), n_frames, fps, AUDIO)
    face = rng.random(n_frames) > 0.2
    au = (rng.random((n_frames, 12)) < 0.3).astype(np.int8)
    au[:, 0] = (expr >= 4).astype(np.int8)
    return SubjectData(
        name=name, video=name, audio=audio,
        visual=(rng.normal(size=(n_frames, 512)) * 0.3 * face[:, None]).astype(np.float16), face_present=face,
        au=au, expr=expr, au_logits=np.zeros((n_frames, 12), np.float32),
        expr_logits=(rng.normal(size=(n_frames, 7)) * face[:, None]).astype(np.float32),
        va=expression_va(expr, seed), va_pred=np.zeros((n_frames, 2), np.float32),
    )


@pytest.fixture(scope="module")
def toy() -> tuple[dict[str, SubjectData], Splits]:
    """Five subjects: three train, two validate; s5 is held out for selection (the holdout mode)."""
    subjects = {f"s{i}": _subject(f"s{i}", i) for i in range(6)}
    train, val, held = ["s0", "s1", "s2"], ["s3", "s4"], ["s5"]
    return subjects, Splits(train={"au": train, "expr": train, "va": train},
                            validation={"au": val, "expr": val, "va": val},
                            selection={"au": held, "expr": held, "va": held})


@pytest.fixture(scope="module")
def toy_without_va(toy) -> tuple[dict[str, SubjectData], Splits]:
    """The same subjects as a dataset without VA_Set: no VA label anywhere, no ``va`` subjects."""
    subjects, splits = toy
    blank = {name: replace(s, va=np.full_like(s.va, np.nan), va_pred=None) for name, s in subjects.items()}
    drop = lambda split: {task: names for task, names in split.items() if task != "va"}  # noqa: E731
    return blank, Splits(train=drop(splits.train), validation=drop(splits.validation),
                         selection=drop(splits.selection))


def test_segments_hold_labels_and_batches_align(toy) -> None:
    subjects, _ = toy
    segments = task_segments(subjects, ["s0", "s1"], "expr", 16)
    assert all(end - begin <= 16 for _, begin, end in segments)
    assert sum(end - begin for _, begin, end in segments) == 300   # every frame in some segment
    batch = make_batch(subjects, segments[:3])
    assert batch.visual.shape == (48, 512) and batch.au.shape == (48, 12) and batch.va.shape == (48, 2)
    np.testing.assert_array_equal(batch.va[:16], subjects["s0"].va[:16])
    assert batch.spans.spans.shape[0] == 3 and len(batch.spans.offsets) == 48
    np.testing.assert_array_equal(batch.expr[:16], subjects["s0"].expr[:16])


def _validation_labels(subjects: dict[str, SubjectData], splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    au = np.concatenate([subjects[n].au for n in splits.validation["au"]])
    return au, np.concatenate([subjects[n].expr for n in splits.validation["expr"]])


def test_audio_carries_what_the_face_does_not(toy, tmp_path: Path) -> None:
    # The face carries nothing here (noise embeddings and logits); the expression, and AU1 with it
    # (on for the expressions >= 4), are audible. The margins sit on the best constant prediction
    # and on the visual-only model (the fused model with its audio ablated).
    subjects, splits = toy
    result = fit(subjects, splits, tiny_config(), tmp_path, torch.device("cpu"), mode="holdout")
    fused, visual = result.metrics["all_frames"], visual_only_metrics(subjects, splits)["all_frames"]
    au_true, expr_true = _validation_labels(subjects, splits)
    assert fused["expr"]["score"] > trivial_expr_score(expr_true) + 0.3, fused
    assert fused["expr"]["score"] > visual["expr"]["score"] + 0.3, (fused, visual)
    assert fused["au"]["score"] > trivial_au_score(au_true) + 0.03, fused
    history = result.history
    assert history[-1]["loss"]["expr"] < 0.7 * history[0]["loss"]["expr"]
    assert not result.model.training
    # holdout: the kept epoch is the best on s5, whatever the validation subjects score
    scores = [h["score"] for h in history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert all(h["score"] == h["selection"]["face_frames"]["score"] for h in history)
    assert result.metrics == history[result.best_epoch - 1]["metrics"]


def test_the_fusion_head_learns_valence_and_arousal(toy, tmp_path: Path) -> None:
    # VA follows the audible expression: the fused model's VA on its training subjects beats any
    # constant prediction (CCC 0), and the validation report carries a finite VA score.
    subjects, splits = toy
    result = fit(subjects, splits, tiny_config(), tmp_path, torch.device("cpu"), mode="holdout")
    assert result.history[-1]["loss"]["va"] < 0.7 * result.history[0]["loss"]["va"]
    outputs = audio_train.predict_subjects(result.model, subjects, splits.train["va"], torch.device("cpu"))
    labels = np.concatenate([subjects[n].va for n in splits.train["va"]])
    predictions = np.concatenate([outputs[n][2] for n in splits.train["va"]])
    assert np.abs(predictions).max() <= 1.0
    constant = va_metrics(labels, np.broadcast_to(labels.mean(axis=0), labels.shape))
    assert va_metrics(labels, predictions)["score"] > constant["score"] + 0.3
    for frames in ("face_frames", "all_frames"):
        va = result.metrics[frames]["va"]
        assert np.isfinite(va["score"]) and va["score"] > 0.3, va
        assert result.metrics[frames]["score"] == pytest.approx(
            np.mean([result.metrics[frames][t]["score"] for t in ("au", "expr", "va")]))


def test_a_dataset_without_va_trains_as_before_with_one_info_line(toy_without_va, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    subjects, splits = toy_without_va
    with caplog.at_level(logging.INFO):
        result = fit(subjects, splits, tiny_config(epochs=1, max_segments=4), tmp_path, torch.device("cpu"),
                     mode="validation")
    skipped = [r.getMessage() for r in caplog.records if "va task is skipped" in r.getMessage()]
    assert skipped == ["train_audio: no VA labels in the training split; the va task is skipped"]
    assert set(result.history[0]["loss"]) == {"expr", "au"}
    for report in (result.metrics, visual_only_metrics(subjects, splits)):
        for frames in ("face_frames", "all_frames"):
            assert set(report[frames]) == {"au", "expr", "score", "frames"}
            assert set(report[frames]["frames"]) == {"au", "expr"}


def test_max_segments_caps_each_task_of_the_rotation(toy, tmp_path: Path, monkeypatch) -> None:
    # batch mode: 3 tasks, each capped at 2 batches of 32 segments, make a 6-step epoch
    subjects, splits = toy
    steps = []
    real = audio_train.batch_loss

    def counting(model, batch, task, *args, **kwargs):
        steps.append(task)
        return real(model, batch, task, *args, **kwargs)

    monkeypatch.setattr(audio_train, "batch_loss", counting)
    fit(subjects, splits, tiny_config(epochs=1, max_segments=64), tmp_path, torch.device("cpu"), mode="last")
    assert steps == ["expr", "au", "va"] * 2


def test_validation_reports_face_frames_and_all_frames(toy, tmp_path: Path) -> None:
    subjects, splits = toy
    report = fit(subjects, splits, tiny_config(epochs=1, max_segments=2), tmp_path, torch.device("cpu"),
                 mode="last").metrics
    faces = sum(int((subjects[n].face_present & (subjects[n].expr >= 0)).sum()) for n in splits.validation["expr"])
    every = sum(int((subjects[n].expr >= 0).sum()) for n in splits.validation["expr"])
    assert report["face_frames"]["frames"]["expr"] == faces < every == report["all_frames"]["frames"]["expr"]
    for frames in ("face_frames", "all_frames"):
        assert set(report[frames]) == {"au", "expr", "va", "score", "frames"}
        assert set(report[frames]["au"]) == {"f1", "acc", "score"}
    va_faces = sum(int(subjects[n].face_present.sum()) for n in splits.validation["va"])
    assert report["face_frames"]["frames"]["va"] == va_faces == report["face_frames"]["va"]["frames_valence"]


@pytest.mark.parametrize(("alternation", "mode"), [("batch", "holdout"), ("epoch", "validation")])
def test_killed_run_resumes_to_the_same_model(toy, tmp_path: Path, monkeypatch, alternation: str, mode: str) -> None:
    subjects, splits = toy
    cfg = tiny_config(epochs=3, alternation=alternation, max_segments=6)
    straight = fit(subjects, splits, cfg, tmp_path / "straight", torch.device("cpu"), mode=mode)

    real = audio_train.predict_subjects
    calls = {"n": 0}
    per_epoch = 2 if mode == "holdout" else 1   # validation, then (holdout) the selection subjects

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == per_epoch + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(audio_train, "predict_subjects", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(subjects, splits, cfg, tmp_path / "killed", torch.device("cpu"), mode=mode)
    monkeypatch.setattr(audio_train, "predict_subjects", real)
    resumed = fit(subjects, splits, cfg, tmp_path / "killed", torch.device("cpu"), mode=mode)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)
    assert resumed.metrics == straight.metrics and resumed.resumed_from == (1, 0)


def test_other_params_start_over(toy, tmp_path: Path) -> None:
    subjects, splits = toy
    fit(subjects, splits, tiny_config(epochs=1, max_segments=2), tmp_path, torch.device("cpu"), mode="validation")
    again = fit(subjects, splits, tiny_config(epochs=1, max_segments=2, seed=1), tmp_path, torch.device("cpu"),
                mode="validation")
    assert [h["epoch"] for h in again.history] == [1]


def test_loosening_the_parity_tolerance_resumes_instead_of_retraining(toy, tmp_path: Path, monkeypatch) -> None:
    # After a failed parity check a user raises train_audio.parity_rtol and reruns: training must
    # not start over, since the tolerance only judges the export.
    subjects, splits = toy
    first = fit(subjects, splits, tiny_config(epochs=1, max_segments=2, parity_rtol=1e-12), tmp_path,
                torch.device("cpu"), mode="validation")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(audio_train, "predict_subjects", no_training)
    again = fit(subjects, splits, tiny_config(epochs=1, max_segments=2, parity_rtol=1e-3), tmp_path,
                torch.device("cpu"), mode="validation")
    assert again.metrics == first.metrics


def test_an_absurd_lr_stops_training_with_a_clear_error(toy, tmp_path: Path) -> None:
    subjects, splits = toy
    with pytest.raises(DivergedError, match=r"train_audio: training diverged at epoch 1, batch \d+: .*"
                                            r"Try a lower train_audio\.lr"):
        fit(subjects, splits, tiny_config(epochs=2, lr=1e8, max_grad_norm=None), tmp_path, torch.device("cpu"),
            mode="validation")
    assert not (tmp_path / "state.pt").exists()   # no epoch finished, nothing to resume or publish


def test_parity_tolerance_comes_from_train_audio_params(tmp_path: Path) -> None:
    config = from_dict(AudioTrainConfig, {**to_dict(tiny_config()), "parity_rtol": 1e-12}, where="train_audio")
    torch.manual_seed(0)
    with pytest.raises(ParityError, match=r"tdnn.onnx: output 'embedding' differs .* > train_audio.parity_rtol 1e-12"):
        publish_outputs(build_model(config), config, tmp_path / "audio")
    assert not (tmp_path / "audio").exists()
    with pytest.raises(ConfigError, match="train_audio.parity_rtol"):
        from_dict(AudioTrainConfig, {"parity_rtol": 0}, where="train_audio")
    with pytest.raises(ConfigError, match=r"train_audio\.va_mse_weight: must be a finite number >= 0, got nan"):
        from_dict(AudioTrainConfig, {"va_mse_weight": float("nan")}, where="train_audio")
    publish_outputs(build_model(tiny_config()), tiny_config(), tmp_path / "audio")
    assert {p.name for p in (tmp_path / "audio").iterdir()} == {OUTPUT_MARKER, "model.pt", "tdnn.onnx"}


def test_window_shorter_than_receptive_field_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="receptive field"):
        tiny_config(audio=AudioConfig(context_s=0.01))


def test_train_audio_end_to_end(tmp_path: Path) -> None:
    prepared, store = build_audio_dataset(tmp_path / "data")
    out, metrics_path = tmp_path / "audio", tmp_path / "metrics" / "audio.json"
    metrics = train_audio(prepared, store, out, metrics_path, tiny_config(epochs=2), tmp_path / "work").metrics
    assert json.loads(metrics_path.read_text()) == metrics
    assert set(metrics) == {"validation", "visual_only", "selection", "epochs", "best_epoch", "au_thresholds"}
    for report in (metrics["validation"], metrics["visual_only"]):
        assert set(report) == {"face_frames", "all_frames"}
        assert set(report["face_frames"]) == {"au", "expr", "va", "score", "frames"}
        assert np.isfinite(report["face_frames"]["va"]["score"])
    selection = metrics["selection"]
    assert selection["mode"] == "holdout" and selection["videos"] and len(selection["per_epoch"]) == 2
    ckpt = torch.load(out / "model.pt", weights_only=True)
    tdnn, head, cfg = load_tdnn(ckpt), load_fusion_head(ckpt), load_audio_config(ckpt)
    assert cfg == AUDIO
    # the fusion head's AU thresholds, chosen on the held-out face frames, are in model.pt and the metrics
    assert ckpt["au_thresholds"] == metrics["au_thresholds"] and ckpt["au_thresholds"]["strategy"] == "per_au"
    assert ckpt["au_thresholds"]["source"].startswith("held-out selection split, face_frames")
    assert model_thresholds(out / "model.pt", "audio model", "train-audio").values == tuple(
        metrics["au_thresholds"]["values"])
    au, expr, va = head(torch.zeros(1, 512), torch.zeros(1, 512))
    assert au.shape == (1, 12) and expr.shape == (1, 7) and va.shape == (1, 2)
    # the checkpoint's fusion head is the trained one, VA head included
    torch.testing.assert_close(head.va_head.weight, ckpt["fusion"]["va_head.weight"])
    meta = read_metadata(out / "tdnn.onnx")
    assert meta["audio_config"]["n_mels"] == 64 and meta["context_frames"] == AUDIO.context_frames
    mel = np.random.default_rng(0).normal(8, 3, size=(3, 64, AUDIO.context_frames)).astype(np.float32)
    session = ort.InferenceSession(str(out / "tdnn.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(["embedding"], {"mel": mel})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, tdnn(torch.from_numpy(mel)).numpy(), rtol=1e-3, atol=1e-4)


def test_train_audio_end_to_end_without_va(tmp_path: Path) -> None:
    prepared, store = build_audio_dataset(tmp_path / "data", n_frames=40, with_va=False)
    metrics = train_audio(prepared, store, tmp_path / "audio", tmp_path / "m.json", tiny_config(epochs=1),
                          tmp_path / "work").metrics
    for report in (metrics["validation"], metrics["visual_only"]):
        assert set(report["all_frames"]) == {"au", "expr", "score", "frames"}


def test_a_checkpoint_from_before_the_va_head_is_refused_in_one_line() -> None:
    ckpt = audio_train.audio_files.checkpoint_dict(build_model(tiny_config()).tdnn,
                                                   build_model(tiny_config()).fusion, AUDIO)
    ckpt["fusion"] = {k: v for k, v in ckpt["fusion"].items() if not k.startswith("va_head.")}
    with pytest.raises(ValueError, match="lacks weights .*va_head.*train it again with train-audio"):
        load_fusion_head(ckpt)


def test_missing_visual_entry_is_named(tmp_path: Path) -> None:
    prepared, store = build_audio_dataset(tmp_path / "data", n_frames=30)
    import shutil

    shutil.rmtree(store / "v2")
    with pytest.raises(ValueError, match="'v2'.*embed-visual"):
        train_audio(prepared, store, tmp_path / "out", tmp_path / "m.json", tiny_config(epochs=1), tmp_path / "w")
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_each_expression_sounds_at_its_own_pitch() -> None:
    # The learning test above relies on it: one second of each expression peaks at its table pitch.
    expr = np.repeat(np.arange(7, dtype=np.int8), 25)
    samples = tone_track(expr, 25.0, 16000, seed=0)
    for k in range(7):
        second = samples[k * 16000:(k + 1) * 16000]
        peak_hz = np.abs(np.fft.rfft(second)).argmax() * 16000 / len(second)
        assert abs(peak_hz - EXPR_PITCH_HZ[k]) <= 2.0, (k, peak_hz)
    assert len(set(EXPR_PITCH_HZ)) == 7
