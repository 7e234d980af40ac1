"""The evaluate library: which frames are scored, each variant's predictions, and every output file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _evaluation_inputs import STRIDE, WINDOW, EvaluationInputs, build_evaluation_inputs
from pipeline.config import ConfigError, from_dict
from pipeline.evaluate.run import (
    VARIANTS,
    EvaluateConfig,
    decide,
    evaluate,
    load_fusion,
    predict_subject,
    score,
    timeline_subjects,
    validation_subjects,
)
from pipeline.evaluate.submission import read_submission
from pipeline.inference.features import compose_features
from pipeline.inference.sequence import load_sequence_runner, sliding_window_logits, torch_run_fn
from pipeline.metrics import au_metrics, expr_metrics
from pipeline.models.fusion import load_fusion_head
from pipeline.models.sequence import build_from_checkpoint
from pipeline.store import EmbeddingStore


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> EvaluationInputs:
    return build_evaluation_inputs(tmp_path_factory.mktemp("evaluate-inputs"))


@pytest.fixture(scope="module")
def evaluated(inputs: EvaluationInputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evaluate-out")
    metrics = _run(inputs, out / "evaluation", out / "metrics.json", EvaluateConfig(timeline_videos=2))
    return out, metrics


def _run(inputs: EvaluationInputs, out_dir: Path, metrics_path: Path, cfg: EvaluateConfig, **kwargs) -> dict:
    return evaluate(inputs.manifest, inputs.visual, inputs.audio, inputs.audio_model,
                    kwargs.pop("sequence", inputs.sequence_model), out_dir, metrics_path, cfg, "cpu", **kwargs)


def test_validation_subjects_are_those_of_either_task(inputs):
    assert [r.name for r in validation_subjects(inputs.manifest)] == ["vidA", "vidB_left", "vidB_right"]


def test_metrics_are_the_abaw_scores_of_the_submitted_predictions(evaluated, inputs):
    # Recomputed here from the submission files and the stored labels of each task's validation
    # subjects: a metric computed on other frames, or other predictions than those submitted, differs.
    out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert sorted(metrics) == sorted(VARIANTS)
    store = EmbeddingStore.open_read(inputs.visual)
    root = out / "evaluation" / "submission"
    for task, metric in (("au", au_metrics), ("expr", expr_metrics)):
        names = [r.name for r in inputs.manifest.subjects if r.split(task) == "validation"]
        labels = np.concatenate([store.read(name)[task] for name in names])
        for variant in VARIANTS:
            submitted = read_submission(root, variant, task)
            predictions = np.concatenate([submitted[name] for name in names]).astype(np.int64)
            assert metrics[variant][task] == pytest.approx(metric(labels, predictions)), (variant, task)
    assert metrics["fusion"] != metrics["visual"] and metrics["sequence"] != metrics["visual"]


def test_only_leakage_free_validation_frames_are_scored(evaluated):
    # The cached visual logits agree with the labels exactly on the validation frames of each task,
    # and disagree on training and excluded subjects: a perfect score means nothing else was scored.
    _, metrics = evaluated
    assert metrics["visual"]["au"] == {"f1": 1.0, "acc": 1.0, "score": 1.0}
    assert metrics["visual"]["expr"] == {"f1": 1.0, "acc": 1.0, "score": 1.0}


def _results(inputs: EvaluationInputs, sequence_path: Path | None = None) -> list:
    """Every validation subject's predictions, without writing outputs."""
    device = torch.device("cpu")
    fusion = load_fusion(inputs.audio_model, device)
    sequence = load_sequence_runner(sequence_path or inputs.sequence_model, "cpu")
    visual, audio = EmbeddingStore.open_read(inputs.visual), EmbeddingStore.open_read(inputs.audio)
    return [predict_subject(r, visual, audio, fusion, sequence, EvaluateConfig(), device)
            for r in validation_subjects(inputs.manifest)]


def test_abaw3_scores_are_the_f1(inputs):
    metrics, _ = score(_results(inputs), "abaw3")
    for variant in VARIANTS:
        for task in ("au", "expr"):
            assert metrics[variant][task]["score"] == pytest.approx(metrics[variant][task]["f1"])


def test_submission_files_cover_every_frame_of_each_validation_subject(evaluated, inputs):
    out, _ = evaluated
    root = out / "evaluation" / "submission"
    frames = {r.name: r.n_frames for r in inputs.manifest.subjects}
    for variant in VARIANTS:
        au = read_submission(root, variant, "au")
        expr = read_submission(root, variant, "expr")
        assert sorted(au) == ["vidA", "vidB_left"] and sorted(expr) == ["vidA", "vidB_right"]
        for name, pred in {**au, **expr}.items():
            assert len(pred) == frames[name]
    visual = EmbeddingStore.open_read(inputs.visual).read("vidA")
    np.testing.assert_array_equal(read_submission(root, "visual", "au")["vidA"], visual["au_logits"] > 0)
    np.testing.assert_array_equal(read_submission(root, "visual", "expr")["vidA"], visual["expr_logits"].argmax(1))


def test_fusion_and_sequence_predictions_are_the_models_outputs(evaluated, inputs):
    out, _ = evaluated
    root = out / "evaluation" / "submission"
    visual = EmbeddingStore.open_read(inputs.visual).read("vidB_right")
    audio = EmbeddingStore.open_read(inputs.audio).read("vidB")
    fusion = load_fusion_head(torch.load(inputs.audio_model, weights_only=True))
    with torch.inference_mode():
        _, expr = fusion(torch.from_numpy(visual["embedding"].astype(np.float32)),
                         torch.from_numpy(audio["embedding"].astype(np.float32)))
    np.testing.assert_array_equal(read_submission(root, "fusion", "expr")["vidB_right"], expr.numpy().argmax(1))

    model = build_from_checkpoint(torch.load(inputs.sequence_model, weights_only=True))
    features = compose_features(visual["embedding"], audio["embedding"], visual["face_present"],
                                audio["audio_present"], "both")
    _, expr = sliding_window_logits(torch_run_fn(model), features, WINDOW, STRIDE)
    np.testing.assert_array_equal(read_submission(root, "sequence", "expr")["vidB_right"], expr.argmax(1))


def test_tables_list_every_class_and_variant(evaluated):
    out, metrics = evaluated
    tables = out / "evaluation" / "tables"
    lines = (tables / "per_class_f1.csv").read_text().splitlines()
    assert lines[0] == "task,class,visual,fusion,sequence"
    assert len(lines) == 1 + 12 + 1 + 7 + 1
    assert lines[1].startswith("au,AU1,1.0000,") and lines[14].startswith("expr,Neutral,")
    mean_au = next(line for line in lines if line.startswith("au,mean,")).split(",")
    assert float(mean_au[4]) == pytest.approx(metrics["sequence"]["au"]["f1"], abs=1e-4)
    md = (tables / "per_class_f1.md").read_text().splitlines()
    assert md[0] == "| task | class | visual | fusion | sequence |" and len(md) == 2 + 21
    scores = (tables / "scores.csv").read_text().splitlines()
    assert scores[0] == "variant,au_f1,au_acc,au_score,expr_f1,expr_acc,expr_score"
    assert scores[1] == "visual,1.0000,1.0000,1.0000,1.0000,1.0000,1.0000"
    assert (tables / "scores.md").is_file()


def test_plots_are_written(evaluated):
    out, _ = evaluated
    names = sorted(p.name for p in (out / "evaluation" / "plots").iterdir())
    assert [n for n in names if not n.startswith("timeline_")] == [
        "au_f1.png", "confusion_fusion.png", "confusion_sequence.png", "confusion_visual.png", "expr_f1.png",
    ]
    assert len([n for n in names if n.startswith("timeline_")]) == 2


def test_onnx_sequence_model_gives_the_torch_predictions(inputs, tmp_path: Path):
    from pipeline.export import export_onnx

    model = build_from_checkpoint(torch.load(inputs.sequence_model, weights_only=True))
    onnx_path = tmp_path / "sequence.onnx"
    axes = {0: "batch", 1: "length"}
    # The parity check runs one frame longer than the example, so the example is one short of max_len.
    export_onnx(model, (torch.zeros(2, WINDOW - 1, model.arch.input_dim),), onnx_path, input_names=["features"],
                output_names=["au_logits", "expr_logits"],
                dynamic_axes={"features": axes, "au_logits": axes, "expr_logits": axes},
                metadata={"modalities": "both", "window": WINDOW, "stride": STRIDE})
    for torch_result, onnx_result in zip(_results(inputs), _results(inputs, onnx_path)):
        np.testing.assert_array_equal(onnx_result.expr_pred["sequence"], torch_result.expr_pred["sequence"])
        np.testing.assert_array_equal(onnx_result.au_pred["sequence"], torch_result.au_pred["sequence"])


def test_same_params_give_the_same_outputs(evaluated, inputs, tmp_path: Path):
    out, metrics = evaluated
    again = _run(inputs, tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(timeline_videos=2))
    assert again == metrics
    first = sorted(p.relative_to(out / "evaluation") for p in (out / "evaluation").rglob("*"))
    second = sorted(p.relative_to(tmp_path / "evaluation") for p in (tmp_path / "evaluation").rglob("*"))
    assert first == second
    for rel in first:
        if rel.suffix in (".txt", ".csv", ".md"):
            assert (out / "evaluation" / rel).read_text() == (tmp_path / "evaluation" / rel).read_text()


def test_missing_store_entry_is_named_and_nothing_is_published(inputs, tmp_path: Path):
    broken = tmp_path / "audio.zarr"
    shutil.copytree(inputs.audio, broken)
    EmbeddingStore.open_append(broken, "a" * 64).discard("vidB")
    with pytest.raises(ValueError, match=r"audio\.zarr: no complete entry for 'vidB' \(re-run embed-audio\)"):
        evaluate(inputs.manifest, inputs.visual, broken, inputs.audio_model, inputs.sequence_model,
                 tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(), "cpu")
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "metrics.json").exists()


def test_missing_checkpoint_is_named(inputs, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        _run(inputs, tmp_path / "e", tmp_path / "m.json", EvaluateConfig(), sequence=tmp_path / "nothing.pt")


def test_decide_thresholds_probabilities():
    au, expr = decide(np.array([[0.0] * 12, [0.1] * 12]), np.array([[0, 2, 1, 0, 0, 0, 0]] * 2), 0.5)
    assert au.tolist() == [[0] * 12, [1] * 12] and expr.tolist() == [1, 1]
    au, _ = decide(np.zeros((1, 12)), np.zeros((1, 7)), 0.3)   # sigmoid(0) = 0.5 > 0.3
    assert au.tolist() == [[1] * 12]


def test_timeline_subjects_are_seeded_and_sorted(evaluated):
    class _R:
        def __init__(self, name):
            self.record = type("Rec", (), {"name": name})

    results = [_R(n) for n in ("d", "a", "c", "b", "e")]
    picks = [r.record.name for r in timeline_subjects(results, 3, seed=1)]
    assert picks == sorted(picks) and len(set(picks)) == 3
    assert picks == [r.record.name for r in timeline_subjects(results, 3, seed=1)]
    assert [r.record.name for r in timeline_subjects(results, 9, seed=1)] == ["a", "b", "c", "d", "e"]


def test_config_from_params():
    cfg = from_dict(EvaluateConfig, {"au_threshold": 0.4, "metric_variant": "abaw3", "timeline_videos": 1,
                                     "timeline_variant": "fusion", "seed": 3})
    assert cfg.au_threshold == 0.4 and cfg.timeline_variant == "fusion"
    with pytest.raises(ConfigError, match="metric_variant"):
        from_dict(EvaluateConfig, {"metric_variant": "abaw9"})
    with pytest.raises(ValueError, match="au_threshold"):
        EvaluateConfig(au_threshold=1.0)
