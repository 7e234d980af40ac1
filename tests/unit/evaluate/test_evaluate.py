"""The evaluate library: which frames are scored, each variant's predictions, and every output file."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _evaluation_inputs import (
    FACELESS, STRIDE, VA_UNLABELLED, WINDOW, EvaluationInputs, build_evaluation_inputs,
)
from pipeline.config import ConfigError, from_dict
from pipeline.au_thresholds import KEY as AU_THRESHOLDS
from pipeline.au_thresholds import AuThresholds
from pipeline.evaluate.scoring import (
    BASELINE,
    CALIBRATED,
    FRAME_SETS,
    VARIANTS,
    EvaluateConfig,
    decide,
    evaluate,
    headline_scores,
    load_fusion,
    predict_subject,
    score,
    timeline_subjects,
    validation_subjects,
)
from pipeline.evaluate.submission import read_submission
from pipeline.inference.features import compose_features
from pipeline.inference.sequence import load_sequence_runner, sliding_window_logits, torch_run_fn
from pipeline.labels import NUM_AUS, NUM_EXPRS
from pipeline.metrics import au_metrics, expr_metrics, va_metrics
from pipeline.model_files.audio import load_fusion_head
from pipeline.model_files.sequence import build_from_checkpoint
from pipeline.storage.embedding_store import EmbeddingStore


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


def _face_masks(inputs: EvaluationInputs) -> dict[str, np.ndarray]:
    store = EmbeddingStore.open_read(inputs.visual)
    return {r.name: store.read(r.name, ("face_present",))["face_present"] for r in inputs.manifest.subjects}


def test_metrics_are_the_abaw_scores_of_the_submitted_predictions(evaluated, inputs):
    # Recomputed here from the submission files and the stored labels of each task's validation
    # subjects, on the frames with a face and on all frames: a metric computed on other frames, or
    # other predictions than those submitted, differs.
    out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert sorted(metrics) == sorted([*FRAME_SETS, *VARIANTS, BASELINE, CALIBRATED])
    for name in (*VARIANTS, BASELINE):
        assert metrics[name] == metrics["face_frames"][name]   # the headline: the paper's frames
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    root = out / "evaluation" / "submission"
    for task, metric in (("au", au_metrics), ("expr", expr_metrics)):
        names = [r.name for r in inputs.manifest.subjects if r.split(task) == "validation"]
        labels = np.concatenate([store.read(name)[task] for name in names])
        face = np.concatenate([faces[name] for name in names])
        for variant in VARIANTS:
            submitted = read_submission(root, variant, task)
            predictions = np.concatenate([submitted[name] for name in names]).astype(np.int64)
            assert metrics["all_frames"][variant][task] == pytest.approx(metric(labels, predictions)), variant
            assert metrics["face_frames"][variant][task] == pytest.approx(metric(labels[face], predictions[face]))
    assert metrics["fusion"] != metrics["visual"] and metrics["sequence"] != metrics["visual"]


def test_only_leakage_free_validation_frames_with_a_face_score_perfectly(evaluated):
    # The cached visual logits agree with the labels exactly on the validation frames with a face of
    # each task, and disagree on training and excluded subjects: a perfect score means nothing else was
    # scored. On all frames, the labelled frames without a face get the fallback and cost points.
    _, metrics = evaluated
    assert metrics["face_frames"]["visual"]["au"] == {"f1": 1.0, "acc": 1.0, "score": 1.0}
    assert metrics["face_frames"]["visual"]["expr"] == {"f1": 1.0, "acc": 1.0, "score": 1.0}
    for task in ("au", "expr"):
        assert metrics["all_frames"]["visual"][task]["score"] < 1.0
        assert metrics["all_frames"]["frames"][task] > metrics["face_frames"]["frames"][task] > 0


def test_frame_counts_are_the_labelled_frames_of_each_set(evaluated, inputs):
    _, metrics = evaluated
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    for task in ("au", "expr"):
        names = [r.name for r in inputs.manifest.subjects if r.split(task) == "validation"]
        labels = [store.read(name)[task] for name in names]
        labelled = [(y >= 0).any(axis=1) if task == "au" else y >= 0 for y in labels]
        assert metrics["all_frames"]["frames"][task] == sum(int(m.sum()) for m in labelled)
        assert metrics["face_frames"]["frames"][task] == sum(
            int((m & faces[n]).sum()) for m, n in zip(labelled, names))


def test_baseline_is_the_training_majority_scored_on_the_same_frames(evaluated, inputs):
    _, metrics = evaluated
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    train = [r.name for r in inputs.manifest.subjects if r.expr_split == "train"]
    for frames in FRAME_SETS:
        expr = np.concatenate([store.read(n)["expr"][faces[n] if frames == "face_frames" else slice(None)]
                               for n in train])
        majority = int(np.bincount(expr[expr >= 0], minlength=NUM_EXPRS).argmax())
        baseline = metrics[frames][BASELINE]
        assert baseline["expr_majority_class"] == majority
        assert baseline["au"]["f1"] == 0.0                 # no AU active: no true positive
        names = [r.name for r in inputs.manifest.subjects if r.expr_split == "validation"]
        truth = np.concatenate([store.read(n)["expr"][faces[n] if frames == "face_frames" else slice(None)]
                                for n in names])
        assert baseline["expr"] == pytest.approx(expr_metrics(truth, np.full_like(truth, majority)))


def test_visual_variant_predicts_the_fixed_fallback_on_frames_without_a_face(inputs):
    # sigmoid(0) = 0.5 exceeds a threshold of 0.3: the stored zero logits would switch every AU on
    results = _results(inputs, cfg=EvaluateConfig(au_threshold=0.3))
    subject = next(r for r in results if r.record.name == FACELESS[0])
    assert not subject.face_present[FACELESS[1]].any()
    assert (subject.au_pred["visual"][FACELESS[1]] == 0).all()
    assert (subject.expr_pred["visual"][FACELESS[1]] == 0).all()   # Neutral
    assert subject.au_pred["visual"][subject.face_present].any()


def test_expr_f1_classes_picks_the_class_set_of_the_macro_f1(inputs):
    # Only Neutral and Anger labelled and predicted: over the 7 classes the macro F1 is 2/7, over the
    # classes present (the ABAW script's average) it is 1.
    result = dataclasses.replace(_results(inputs)[0])
    result.expr_true = np.where(result.expr_true >= 0, result.expr_true % 2, -1).astype(np.int8)
    result.expr_pred = {v: np.where(result.expr_true >= 0, result.expr_true, 0).astype(np.int8) for v in VARIANTS}
    every, _ = score([result], "abaw2", "all")
    present, _ = score([result], "abaw2", "present")
    for frames in FRAME_SETS:
        assert every[frames]["sequence"]["expr"]["f1"] == pytest.approx(2 / 7)
        assert present[frames]["sequence"]["expr"]["f1"] == pytest.approx(1.0)


def _results(inputs: EvaluationInputs, sequence_path: Path | None = None, cfg: EvaluateConfig | None = None) -> list:
    """Every validation subject's predictions, without writing outputs."""
    device = torch.device("cpu")
    fusion = load_fusion(inputs.audio_model, device)
    sequence = load_sequence_runner(sequence_path or inputs.sequence_model, "cpu")
    visual, audio = EmbeddingStore.open_read(inputs.visual), EmbeddingStore.open_read(inputs.audio)
    return [predict_subject(r, visual, audio, fusion, sequence, cfg or EvaluateConfig(), device)
            for r in validation_subjects(inputs.manifest)]


def test_abaw3_scores_are_the_f1(inputs):
    metrics, _ = score(_results(inputs), "abaw3")
    for frames in FRAME_SETS:
        for variant in (*VARIANTS, BASELINE):
            for task in ("au", "expr"):
                assert metrics[frames][variant][task]["score"] == pytest.approx(metrics[frames][variant][task]["f1"])


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
        _, expr, va = fusion(torch.from_numpy(visual["embedding"].astype(np.float32)),
                             torch.from_numpy(audio["embedding"].astype(np.float32)))
    np.testing.assert_array_equal(read_submission(root, "fusion", "expr")["vidB_right"], expr.numpy().argmax(1))
    np.testing.assert_allclose(read_submission(root, "fusion", "va")["vidB_right"], va.numpy(), atol=5e-4 + 1e-6)

    model = build_from_checkpoint(torch.load(inputs.sequence_model, weights_only=True))
    features = compose_features(visual["embedding"], audio["embedding"], visual["face_present"],
                                audio["audio_present"], "both")
    _, expr, va = sliding_window_logits(torch_run_fn(model), features, WINDOW, STRIDE)
    np.testing.assert_array_equal(read_submission(root, "sequence", "expr")["vidB_right"], expr.argmax(1))
    np.testing.assert_allclose(read_submission(root, "sequence", "va")["vidB_right"], va, atol=5e-4 + 1e-6)


def test_tables_list_every_class_variant_and_frame_set(evaluated):
    out, metrics = evaluated
    tables = out / "evaluation" / "tables"
    lines = (tables / "per_class_f1.csv").read_text().splitlines()
    columns = [f"{f}.{v}" for f in FRAME_SETS for v in (*VARIANTS, BASELINE)]
    assert lines[0] == "task,class," + ",".join(columns)
    assert len(lines) == 1 + 12 + 1 + 7 + 1
    assert lines[1].startswith("au,AU1,1.0000,") and lines[14].startswith("expr,Neutral,")
    macro_au = next(line for line in lines if line.startswith("au,macro,")).split(",")
    assert float(macro_au[2 + columns.index("face_frames.sequence")]) == pytest.approx(
        metrics["face_frames"]["sequence"]["au"]["f1"], abs=1e-4)
    assert float(macro_au[2 + columns.index("all_frames.fusion")]) == pytest.approx(
        metrics["all_frames"]["fusion"]["au"]["f1"], abs=1e-4)
    md = (tables / "per_class_f1.md").read_text().splitlines()
    assert md[0] == "| task | class | " + " | ".join(columns) + " |" and len(md) == 2 + 21
    scores = (tables / "scores.csv").read_text().splitlines()
    assert scores[0] == ("frames,variant,au_f1,au_acc,au_score,expr_f1,expr_acc,expr_score,"
                         "va_ccc_valence,va_ccc_arousal,va_score,au_frames,expr_frames,va_frames")
    counts = metrics["face_frames"]["frames"]
    assert scores[1] == ("face_frames,visual," + ",".join(["1.0000"] * 9)
                         + f",{counts['au']},{counts['expr']},{counts['va']}")
    assert [row.split(",")[:2] for row in scores[1:]] == [c.split(".") for c in columns]
    assert (tables / "scores.md").is_file()


def test_plots_are_written(evaluated):
    out, _ = evaluated
    names = sorted(p.name for p in (out / "evaluation" / "plots").iterdir())
    assert [n for n in names if "timeline_" not in n] == [
        "au_f1.png", "confusion_fusion.png", "confusion_sequence.png", "confusion_visual.png", "expr_f1.png",
        "va_density.png",
    ]
    assert len([n for n in names if n.startswith("timeline_")]) == 2
    # the VA timelines: two drawn (timeline_videos) from the VA validation subjects alone
    assert [n for n in names if n.startswith("va_timeline_")] == ["va_timeline_vidA.png", "va_timeline_vidB_right.png"]


def test_onnx_sequence_model_gives_the_torch_predictions(inputs, tmp_path: Path):
    from pipeline.model_files.onnx_export import export_onnx

    model = build_from_checkpoint(torch.load(inputs.sequence_model, weights_only=True))
    onnx_path = tmp_path / "sequence.onnx"
    axes = {0: "batch", 1: "length"}
    # The parity check runs one frame longer than the example, so the example is one short of max_len.
    export_onnx(model, (torch.zeros(2, WINDOW - 1, model.arch.input_dim),), onnx_path, input_names=["features"],
                output_names=["au_logits", "expr_logits", "va_pred"],
                dynamic_axes={"features": axes, "au_logits": axes, "expr_logits": axes, "va_pred": axes},
                metadata={"modalities": "both", "window": WINDOW, "stride": STRIDE})
    for torch_result, onnx_result in zip(_results(inputs), _results(inputs, onnx_path)):
        np.testing.assert_array_equal(onnx_result.expr_pred["sequence"], torch_result.expr_pred["sequence"])
        np.testing.assert_array_equal(onnx_result.au_pred["sequence"], torch_result.au_pred["sequence"])
        for variant, va in torch_result.va_pred.items():
            np.testing.assert_allclose(onnx_result.va_pred[variant], va, atol=1e-5)


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


def test_missing_training_subject_is_named_before_anything_runs(inputs, tmp_path: Path):
    # the baseline's majority expression comes from the training subjects' labels in the visual store
    broken = tmp_path / "visual.zarr"
    shutil.copytree(inputs.visual, broken)
    EmbeddingStore.open_append(broken, "v" * 64).discard("vidC")
    with pytest.raises(ValueError, match=r"visual\.zarr: no complete entry for 'vidC' \(re-run embed-visual\)"):
        evaluate(inputs.manifest, broken, inputs.audio, inputs.audio_model, inputs.sequence_model,
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
                                     "timeline_variant": "fusion", "seed": 3, "expr_f1_classes": "present"})
    assert cfg.au_threshold == 0.4 and cfg.timeline_variant == "fusion" and cfg.expr_f1_classes == "present"
    with pytest.raises(ConfigError, match="expr_f1_classes"):
        from_dict(EvaluateConfig, {"expr_f1_classes": "some"})
    with pytest.raises(ConfigError, match="metric_variant"):
        from_dict(EvaluateConfig, {"metric_variant": "abaw9"})
    with pytest.raises(ValueError, match="au_threshold"):
        EvaluateConfig(au_threshold=1.0)


def test_batch_size_reaches_the_sequence_model(inputs):
    device = torch.device("cpu")
    fusion = load_fusion(inputs.audio_model, device)
    sequence = load_sequence_runner(inputs.sequence_model, "cpu")
    batches: list[int] = []

    def counted(batch: np.ndarray):
        batches.append(len(batch))
        return sequence.run_fn(batch)

    counting = dataclasses.replace(sequence, run_fn=counted)
    visual, audio = EmbeddingStore.open_read(inputs.visual), EmbeddingStore.open_read(inputs.audio)
    record = validation_subjects(inputs.manifest)[0]
    one = predict_subject(record, visual, audio, fusion, counting, EvaluateConfig(), device, batch_size=1)
    assert batches and set(batches) == {1}
    batches.clear()
    many = predict_subject(record, visual, audio, fusion, counting, EvaluateConfig(), device, batch_size=1000)
    assert len(batches) == 1 and batches[0] > 1
    np.testing.assert_array_equal(one.expr_pred["sequence"], many.expr_pred["sequence"])


def _thresholds(value: float) -> dict:
    return AuThresholds((value,) * NUM_AUS, "per_au", ("calibrated",) * NUM_AUS, "test").record()


def _with_thresholds(inputs: EvaluationInputs, root: Path, visual: float, fusion: float,
                     sequence: float) -> EvaluationInputs:
    """A copy of ``inputs`` whose three models carry the given thresholds (the visual model's as
    ``embed-visual`` records its ONNX metadata with the store)."""
    store = root / "visual.zarr"
    shutil.copytree(inputs.visual, store)
    root_json = store / "zarr.json"
    meta = json.loads(root_json.read_text())
    meta["attributes"]["model"] = {"model": "visual", AU_THRESHOLDS: _thresholds(visual)}
    root_json.write_text(json.dumps(meta))
    models = {}
    for name, path, value in (("audio", inputs.audio_model, fusion), ("sequence", inputs.sequence_model, sequence)):
        models[name] = root / name / "model.pt"
        models[name].parent.mkdir()
        torch.save({**torch.load(path, weights_only=True), AU_THRESHOLDS: _thresholds(value)}, models[name])
    return dataclasses.replace(inputs, visual=store, audio_model=models["audio"], sequence_model=models["sequence"])


def test_models_without_thresholds_score_at_one_half_under_calibrated(evaluated):
    # The test models carry no thresholds (as files from before calibration): their calibrated AU
    # scores are the fixed 0.5 ones, recorded as such.
    _, metrics = evaluated
    for frames in FRAME_SETS:
        for variant in VARIANTS:
            assert metrics[CALIBRATED][frames][variant]["au"] == metrics[frames][variant]["au"]
    assert {r["strategy"] for r in metrics[CALIBRATED]["thresholds"].values()} == {"fixed"}
    assert "carries no thresholds" in metrics[CALIBRATED]["thresholds"]["sequence"]["source"]


def test_each_variant_is_also_scored_at_its_own_models_thresholds(evaluated, inputs, tmp_path: Path):
    # visual and sequence thresholds above every probability: no AU active, the baseline's AU score;
    # the fusion head's below every probability: every AU active.
    own = _with_thresholds(inputs, tmp_path, visual=0.99999, fusion=1e-6, sequence=0.99999)
    metrics = _run(own, tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(timeline_videos=2))
    _, fixed = evaluated
    assert {k: v for k, v in metrics.items() if k != CALIBRATED} == {k: v for k, v in fixed.items() if k != CALIBRATED}
    calibrated = metrics[CALIBRATED]
    assert calibrated["thresholds"]["fusion"]["values"] == [1e-6] * NUM_AUS
    for frames in FRAME_SETS:
        for variant in ("visual", "sequence"):
            assert calibrated[frames][variant]["au"] == metrics[frames][BASELINE]["au"], (frames, variant)
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    names = [r.name for r in inputs.manifest.subjects if r.au_split == "validation"]
    labels = np.concatenate([store.read(name)["au"][faces[name]] for name in names])
    assert calibrated["face_frames"]["fusion"]["au"] == pytest.approx(au_metrics(labels, np.ones_like(labels)))
    assert calibrated["face_frames"]["fusion"]["au"] != metrics["face_frames"]["fusion"]["au"]
    with (tmp_path / "evaluation" / "tables" / "calibrated.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    fusion = next(r for r in rows if (r["frames"], r["variant"]) == ("face_frames", "fusion"))
    assert len(rows) == len(FRAME_SETS) * len(VARIANTS) and fusion["thresholds"] == "per_au"
    assert float(fusion["au_score_own"]) == pytest.approx(calibrated["face_frames"]["fusion"]["au"]["score"], abs=1e-4)
    assert float(fusion["au_score_fixed"]) == pytest.approx(metrics["face_frames"]["fusion"]["au"]["score"], abs=1e-4)
    headline = headline_scores(metrics)
    assert headline[CALIBRATED]["fusion"] == {"au": {"score": calibrated["face_frames"]["fusion"]["au"]["score"]}}
    assert {k: v for k, v in headline.items() if k != CALIBRATED} == {
        k: v for k, v in headline_scores(fixed).items() if k != CALIBRATED}


def _va_names(inputs: EvaluationInputs, split: str) -> list[str]:
    return [r.name for r in inputs.manifest.subjects if r.split("va") == split]


def test_va_scores_are_va_metrics_of_each_variants_predictions(evaluated, inputs):
    # Recomputed with pipeline.metrics.va_metrics from the stored labels of the VA validation subjects
    # and each variant's submitted predictions (3 decimals), on both frame sets: scoring other
    # subjects (vidB_left is VA training, its predictions wrong) or other frames gives other numbers.
    out, metrics = evaluated
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    names = _va_names(inputs, "validation")
    assert names == ["vidA", "vidB_right"]
    labels = np.concatenate([store.read(name)["va"] for name in names])
    face = np.concatenate([faces[name] for name in names])
    root = out / "evaluation" / "submission"
    for variant in VARIANTS:
        submitted = read_submission(root, variant, "va")
        assert sorted(submitted) == names
        predictions = np.concatenate([submitted[name] for name in names])
        for frames, keep in (("all_frames", slice(None)), ("face_frames", face)):
            expected = va_metrics(labels[keep], predictions[keep])
            found = metrics[frames][variant]["va"]
            assert sorted(found) == ["ccc_arousal", "ccc_valence", "score"]
            assert found == pytest.approx({k: expected[k] for k in found}, abs=2e-3), (frames, variant)
        assert metrics[variant]["va"] == metrics["face_frames"][variant]["va"]
    # the visual store's VA predictions equal the labels on exactly those frames with a face
    assert metrics["face_frames"]["visual"]["va"] == {"ccc_valence": 1.0, "ccc_arousal": 1.0, "score": 1.0}
    assert metrics["all_frames"]["visual"]["va"]["score"] < 1.0      # 0 on frames without a face
    labelled = ~np.isnan(labels).any(axis=1)
    assert metrics["all_frames"]["frames"]["va"] == int(labelled.sum()) == len(labels) - 2 * 3
    assert metrics["face_frames"]["frames"]["va"] == int((labelled & face).sum())


def test_va_baseline_is_the_training_mean_of_each_dimension(evaluated, inputs):
    _, metrics = evaluated
    store = EmbeddingStore.open_read(inputs.visual)
    faces = _face_masks(inputs)
    train = _va_names(inputs, "train")
    assert train == ["vidB_left", "vidC"]
    validation = _va_names(inputs, "validation")
    for frames in FRAME_SETS:
        def pick(name: str) -> np.ndarray:
            va = store.read(name)["va"]
            return va[faces[name]] if frames == "face_frames" else va
        mean = np.nanmean(np.concatenate([pick(n) for n in train]), axis=0)
        baseline = metrics[frames][BASELINE]
        assert baseline["va_mean"] == pytest.approx(mean.tolist())
        truth = np.concatenate([pick(n) for n in validation])
        expected = va_metrics(truth, np.broadcast_to(mean, truth.shape))
        assert baseline["va"] == {k: expected[k] for k in ("ccc_valence", "ccc_arousal", "score")}
        assert baseline["va"]["score"] == 0.0     # a constant has no concordance


def test_va_labels_count_only_in_the_va_validation_split(inputs):
    # vidA is in every validation split; dropping it from the VA one leaves its AU/EXPR labels scored
    # and its VA labels out, and vidB_left (AU validation, VA training) never has VA labels
    records = tuple(dataclasses.replace(r, va_split="train") if r.name == "vidA" else r
                    for r in inputs.manifest.subjects)
    moved = dataclasses.replace(inputs, manifest=dataclasses.replace(inputs.manifest, subjects=records))
    results = {r.record.name: r for r in _results(moved)}
    assert results["vidA"].va_true is None and not results["vidA"].va_pred
    assert results["vidB_left"].va_true is None
    assert (results["vidA"].expr_true >= 0).any()
    right = results["vidB_right"]
    assert np.isnan(right.va_true[VA_UNLABELLED]).all() and sorted(right.va_pred) == sorted(VARIANTS)
    metrics, _ = score(list(results.values()), "abaw2")
    assert metrics["face_frames"]["frames"]["va"] == int(
        (~np.isnan(right.va_true).any(axis=1) & right.face_present).sum())


def test_visual_va_is_the_centre_on_frames_without_a_face(inputs):
    subject = next(r for r in _results(inputs) if r.record.name == FACELESS[0])
    assert (subject.va_pred["visual"][FACELESS[1]] == 0.0).all()
    assert (subject.va_pred["visual"][subject.face_present] != 0.0).any()


def test_headline_carries_each_variants_va_score(evaluated):
    _, metrics = evaluated
    headline = headline_scores(metrics)
    for variant in VARIANTS:
        assert headline[variant]["va"] == {"score": metrics["face_frames"][variant]["va"]["score"]}


def _keys(document: dict) -> set[str]:
    """Every key of a nested JSON document."""
    found = set(document)
    for value in document.values():
        if isinstance(value, dict):
            found |= _keys(value)
    return found


@pytest.fixture(scope="module")
def without_va(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationInputs, Path]:
    root = tmp_path_factory.mktemp("evaluate-no-va")
    return build_evaluation_inputs(root / "inputs", with_va=False), root


def test_a_manifest_without_va_evaluates_as_before(without_va, evaluated, caplog):
    # an Aff-Wild2 copy without VA_Set: no VA split, a store without va/va_pred arrays; the AU and
    # EXPR results are those of the same inputs with VA, and nothing says "va" but one INFO line
    inputs, root = without_va
    with caplog.at_level("INFO", logger="pipeline.evaluate.scoring"):
        metrics = _run(inputs, root / "evaluation", root / "metrics.json", EvaluateConfig(timeline_videos=2))
    assert [m for m in caplog.messages if "VA" in m] == [
        "no subject in the VA validation split: valence-arousal is not scored"]
    assert not {"va", "va_mean"} & _keys(metrics)
    _, with_va = evaluated
    for frames in FRAME_SETS:
        for name in (*VARIANTS, BASELINE):
            assert metrics[frames][name] == {k: v for k, v in with_va[frames][name].items()
                                             if k not in ("va", "va_mean")}
    assert "va" not in headline_scores(metrics)["sequence"]
    evaluation = root / "evaluation"
    assert not list(evaluation.rglob("VA_Set")) and not list(evaluation.rglob("va_*"))
    assert (evaluation / "tables" / "scores.csv").read_text().splitlines()[0] == (
        "frames,variant,au_f1,au_acc,au_score,expr_f1,expr_acc,expr_score,au_frames,expr_frames")


def test_a_va_validation_subject_without_va_in_the_store_is_named(without_va, tmp_path: Path):
    inputs, _ = without_va
    records = tuple(dataclasses.replace(r, va_split="validation") if r.name == "vidB_right" else r
                    for r in inputs.manifest.subjects)
    manifest = dataclasses.replace(inputs.manifest, subjects=records)
    with pytest.raises(ValueError, match=r"visual\.zarr: 'vidB_right' has no 'va' array.*re-run embed-visual"):
        evaluate(manifest, inputs.visual, inputs.audio, inputs.audio_model, inputs.sequence_model,
                 tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(), "cpu")
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "metrics.json").exists()


def test_a_frame_set_without_labelled_va_frames_leaves_va_out(inputs, caplog):
    # every VA validation frame faceless: no CCC on face frames (it would be NaN), all frames still scored
    results = [dataclasses.replace(r, face_present=np.zeros_like(r.face_present)) if r.va_true is not None else r
               for r in _results(inputs)]
    with caplog.at_level("INFO", logger="pipeline.evaluate.scoring"):
        metrics, _ = score(results, "abaw2")
    assert "va" not in metrics["face_frames"]["frames"] and "va" not in metrics["face_frames"]["sequence"]
    assert "va_mean" not in metrics["face_frames"][BASELINE]
    assert metrics["all_frames"]["frames"]["va"] > 0 and "va" in metrics["all_frames"]["sequence"]
    assert caplog.messages == ["face_frames: no labelled valence or arousal frame; VA is not scored on this frame set"]


@pytest.mark.parametrize("name, frame, value, message", [
    ("va", 7, 1.5, r"visual\.zarr: 'vidA': frame 7: arousal label 1\.5 is not in \[-1, 1\] or NaN \(unlabelled\)"),
    ("va_pred", 12, np.nan, r"visual\.zarr: 'vidA': frame 12: arousal visual prediction nan is not in \[-1, 1\]$"),
    ("va_pred", 3, -1.01, r"visual\.zarr: 'vidA': frame 3: arousal visual prediction -1\.00999999 is not in \[-1, 1\]$"),
])
def test_va_outside_its_range_in_the_store_is_named_with_its_frame(inputs, tmp_path: Path, name, frame, value,
                                                                    message):
    broken = tmp_path / "visual.zarr"
    shutil.copytree(inputs.visual, broken)
    store = EmbeddingStore.open_append(broken, "v" * 64)
    arrays = store.read("vidA")
    arrays[name][frame, 1] = value
    store.write("vidA", arrays, store.entry_attrs("vidA"))
    with pytest.raises(ValueError, match=message):
        evaluate(inputs.manifest, broken, inputs.audio, inputs.audio_model, inputs.sequence_model,
                 tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(), "cpu")
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "metrics.json").exists()


def test_a_prediction_a_rounding_past_the_range_is_clipped_not_refused(inputs, tmp_path: Path) -> None:
    """onnxruntime's tanh can give -1 - 1 ulp for a saturated output: that is a valid prediction."""
    store_path = tmp_path / "visual.zarr"
    shutil.copytree(inputs.visual, store_path)
    store = EmbeddingStore.open_append(store_path, "v" * 64)
    arrays = store.read("vidA")
    faces = np.flatnonzero(arrays["face_present"])
    arrays["va_pred"][faces[0], 0] = np.nextafter(np.float32(-1.0), np.float32(-2.0))
    store.write("vidA", arrays, store.entry_attrs("vidA"))
    metrics = evaluate(inputs.manifest, store_path, inputs.audio, inputs.audio_model, inputs.sequence_model,
                       tmp_path / "evaluation", tmp_path / "metrics.json", EvaluateConfig(), "cpu")
    assert np.isfinite(metrics["face_frames"]["visual"]["va"]["score"])
