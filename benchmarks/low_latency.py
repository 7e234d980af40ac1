"""The causal (low-latency) sequence mode against the offline one on the demo's validation set; prints JSON.

Scores: ``evaluate``'s own path (:func:`pipeline.evaluate.scoring.predict_subject` with ``model.pt``,
its scoring :func:`pipeline.evaluate.scoring.score`) gives the offline ``sequence`` score, checked
against ``metrics/evaluate.json``; the same subjects are then scored with the sequence predictions
replaced by those of each mode, run on ``sequence.onnx`` (what ``predict`` runs) and on ``model.pt``:

* ``offline``: overlapping windows averaged over the whole video (``evaluate`` and ``predict``);
* ``causal_pad``: frame ``t`` from the window ending on ``t``, the first frames' windows filled on
  the left with "no face, no audio" frames (the default of ``predict --low-latency``);
* ``causal_short``: the same, the first frames' windows cut to the history ``[0, t]``;
* ``causal_pad_causal_audio``: ``causal_pad`` with the audio embeddings delayed by
  :func:`pipeline.audio.windows.causal_audio_delay` frames, so no frame reads audio after its time.

Latency: the look-ahead of each mode (the audio window's, from the audio config in ``tdnn.onnx``),
and the compute time of one causal step (:meth:`pipeline.inference.causal.CausalStream.push`:
compose the new frame, run one window of ``sequence.onnx``), timed frame by frame over a validation
subject, median and 90th percentile; the embeddings of the new frame (visual and audio models) are
not in it (see ``embed_visual.json``, ``audio_tdnn.json``). The whole-video throughput of the
causal and the offline mode is measured side by side in alternating rounds.

    OMP_NUM_THREADS=2 python -m benchmarks.low_latency --cache cache --metrics metrics/evaluate.json \\
        --params params.yaml
"""

from __future__ import annotations

import json
import os
import time
from copy import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.audio.windows import audio_lookahead_s, causal_audio_delay
from pipeline.config import from_dict, load_section
from pipeline.data.manifest import read_manifest
from pipeline.device import resolve_device
from pipeline.evaluate.scoring import (
    EvaluateConfig, SubjectResult, decide, load_fusion, predict_subject, score, training_majority,
    validation_subjects,
)
from pipeline.model_files.audio import read_audio_config as load_audio_config
from pipeline.inference.causal import CausalStream, causal_logits
from pipeline.inference.sequence import SequenceRunner, load_sequence_runner
from pipeline.storage.embedding_store import EmbeddingStore
from tooling.bench import harness

FRAME_SETS = ("face_frames", "all_frames")
Inputs = dict[str, np.ndarray]
Mode = Callable[[SequenceRunner, Inputs, float], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _args(inputs: Inputs) -> tuple[np.ndarray, ...]:
    return inputs["visual"], inputs["audio"], inputs["face_present"], inputs["audio_present"]


def modes(audio_cfg: Any) -> dict[str, Mode]:
    """Each mode's per-frame logits of one subject from a runner, its inputs and its fps."""
    return {
        "offline": lambda runner, inputs, fps: runner.video_logits(*_args(inputs)),
        "causal_pad": lambda runner, inputs, fps: causal_logits(runner, *_args(inputs), warmup="pad"),
        "causal_short": lambda runner, inputs, fps: causal_logits(runner, *_args(inputs), warmup="short"),
        "causal_pad_causal_audio": lambda runner, inputs, fps: causal_logits(
            runner, *_args(inputs), warmup="pad", audio_delay=causal_audio_delay(audio_cfg, fps)),
    }


def headline(by_frames: dict[str, Any]) -> dict[str, Any]:
    """The sequence variant's AU and EXPR scores (f1, acc, score) on both frame sets."""
    return {frames: {task: {k: round(v, 4) for k, v in by_frames[frames]["sequence"][task].items()}
                     for task in ("au", "expr")} for frames in FRAME_SETS}


def with_sequence(results: list[SubjectResult], logits: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                  threshold: float) -> list[SubjectResult]:
    """Copies of ``results`` whose ``sequence`` AU and EXPR predictions come from ``logits`` (one
    ``(au, expr, va)`` per subject; the latency study scores AU and EXPR only)."""
    swapped = []
    for result, (au, expr, _va) in zip(results, logits):
        other = copy(result)
        other.au_pred, other.expr_pred = dict(result.au_pred), dict(result.expr_pred)
        other.au_pred["sequence"], other.expr_pred["sequence"] = decide(au, expr, threshold)
        swapped.append(other)
    return swapped


def step_times(runner: SequenceRunner, inputs: Inputs, frames: int) -> np.ndarray:
    """Seconds of each :meth:`CausalStream.push` over the first ``frames`` frames of ``inputs`` (repeated)."""
    stream = CausalStream(runner)
    n = len(inputs["visual"])
    times = np.empty(frames)
    for i in range(frames):
        t = i % n
        start = time.perf_counter()
        stream.push(inputs["visual"][t], inputs["audio"][t], bool(inputs["face_present"][t]),
                    bool(inputs["audio_present"][t]))
        times[i] = time.perf_counter() - start
    return times


def throughput(runner: SequenceRunner, subjects: list[Inputs], rounds: int) -> dict[str, Any]:
    """Frames/s of the offline and the causal mode over ``subjects``, in alternating rounds."""
    frames = sum(len(s["visual"]) for s in subjects)
    seconds: dict[str, list[float]] = {"offline": [], "causal": []}
    for _ in range(rounds):
        for name in seconds:
            start = time.perf_counter()
            for inputs in subjects:
                if name == "offline":
                    runner.video_logits(*_args(inputs))
                else:
                    causal_logits(runner, *_args(inputs))
            seconds[name].append(time.perf_counter() - start)
    fps = {name: frames / float(np.median(s)) for name, s in seconds.items()}
    return {"frames": frames, "rounds": rounds, **{f"{k}_fps": round(v, 1) for k, v in fps.items()},
            "causal_over_offline_time": round(fps["offline"] / fps["causal"], 2)}


def main() -> None:
    parser = harness.parser("low_latency", __doc__)
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="the pipeline's cache folder")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"),
                        help="evaluate's metrics, which the offline score must equal")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the evaluate section")
    parser.add_argument("--steps", type=int, default=500, help="causal steps timed one frame at a time")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")),
                        help="onnxruntime threads (0: its default)")
    args = parser.parse_args()
    bench = harness.start("low_latency")
    cfg = from_dict(EvaluateConfig, load_section(args.params, "evaluate"), where=f"{args.params}:evaluate")
    manifest = read_manifest(args.cache / "prepared" / "manifest.json")
    visual_store = EmbeddingStore.open_read(args.cache / "embeddings" / "visual.zarr")
    audio_store = EmbeddingStore.open_read(args.cache / "embeddings" / "audio.zarr")
    audio_cfg = load_audio_config(args.cache / "audio" / "tdnn.onnx")
    device = resolve_device("cpu")
    runners = {
        "model.pt": load_sequence_runner(args.cache / "sequence" / "model.pt", "cpu"),
        "sequence.onnx": load_sequence_runner(args.cache / "sequence" / "sequence.onnx", "cpu", args.threads),
    }
    fusion = load_fusion(args.cache / "audio" / "model.pt", device)
    subjects = validation_subjects(manifest)
    # evaluate's own predictions (model.pt), the baseline's majority class and scoring
    results = [predict_subject(r, visual_store, audio_store, fusion, runners["model.pt"], cfg, device)
               for r in subjects]
    majority = training_majority(manifest, visual_store)
    inputs = []
    for record in subjects:
        visual = visual_store.read(record.name, ("embedding", "face_present"))
        audio = audio_store.read(record.video, ("embedding", "audio_present"))
        inputs.append({"visual": visual["embedding"], "face_present": visual["face_present"],
                       "audio": audio["embedding"], "audio_present": audio["audio_present"]})

    evaluate_scores = headline(score(results, cfg.metric_variant, cfg.expr_f1_classes, majority)[0])
    scores: dict[str, dict[str, Any]] = {}
    for model, runner in runners.items():
        for mode, run in modes(audio_cfg).items():
            logits = [run(runner, x, r.fps) for x, r in zip(inputs, subjects)]
            by_frames = score(with_sequence(results, logits, cfg.au_threshold), cfg.metric_variant,
                              cfg.expr_f1_classes, majority)[0]
            scores.setdefault(model, {})[mode] = headline(by_frames)
    reference = json.loads(args.metrics.read_text()) if args.metrics.is_file() else None
    matches = None if reference is None else all(
        abs(reference[frames]["sequence"][task][key] - evaluate_scores[frames][task][key]) < 1e-4
        for frames in FRAME_SETS for task in ("au", "expr") for key in ("f1", "acc", "score"))

    runner = runners["sequence.onnx"]
    longest = max(inputs, key=lambda x: len(x["visual"]))
    step_times(runner, longest, 20)     # warm-up
    steps = step_times(runner, longest, args.steps) * 1000.0
    lookahead = audio_lookahead_s(audio_cfg)
    fps_values = sorted({round(r.fps, 3) for r in subjects})
    results_doc = {
        "subjects": len(subjects),
        "frames": int(sum(r.n_frames for r in subjects)),
        "window": runner.window,
        "stride": runner.stride,
        "modalities": runner.modalities,
        "evaluate_path_scores": evaluate_scores,
        "offline_equals_metrics_json": matches,
        "metrics_json": str(args.metrics),
        "scores": scores,
        "latency": {
            "causal_step_ms_median": round(float(np.median(steps)), 3),
            "causal_step_ms_p90": round(float(np.percentile(steps, 90)), 3),
            "steps_timed": args.steps,
            "step": "compose one frame + one window of sequence.onnx (batch 1); embeddings not included",
            "audio_lookahead_s": round(lookahead, 4),
            "causal_audio_delay_frames": {str(fps): causal_audio_delay(audio_cfg, fps) for fps in fps_values},
            # frames after t that frame t's prediction reads: the causal window ends on t; the offline
            # windows covering t reach up to window - 1 frames past it (and predict reads the whole video first)
            "video_lookahead_frames": {"offline": runner.window - 1, "causal": 0},
        },
        "throughput": throughput(runner, inputs, args.rounds),
        "onnx_threads": args.threads,
    }
    bench.publish(results_doc, args.threads or (os.cpu_count() or 1), args.out)


if __name__ == "__main__":
    main()
