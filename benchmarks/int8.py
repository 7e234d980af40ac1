"""int8 vs float32 on the CPU, in one run: visual faces/s, TDNN windows/s, and the demo's validation scores.

Three parts, each measured side by side so that the load of a shared machine hits both precisions:

- ``visual``: the demo's ``visual.onnx`` (``--cache``, width_mult 0.125) and a randomly initialised
  IResNet at the paper's width 1.0 (``int8_visual.export_backbone``) are quantized with every
  ``--variants`` setting (:class:`pipeline.model_files.int8.QuantSettings`; calibrated on ``--crops`` crops
  of the demo's ``frames.h5``) and timed on the same pre-decoded faces, float32 and each variant in
  turn for ``--rounds`` rounds; medians, int8/float32 ratios and the agreement of the outputs.
- ``tdnn``: the demo's ``tdnn.onnx`` and its int8 model (calibrated on the training videos' windows,
  as ``train-audio`` does) through :class:`pipeline.inference.audio.AudioEmbedder` over the
  soundtracks of ``--audio-videos`` demo videos, alternating; windows/s = video frames with audio
  embedded per second.
- ``scores``: the demo's visual and audio embedding stores rebuilt from the int8 models (default
  settings, as the pipeline writes them) for every subject, then ``evaluate`` run with the SAME
  trained fusion head and sequence model on the float32 stores of ``--cache`` and on the int8 ones;
  the validation AU and EXPR scores of both and their change (goal: within 0.01). This isolates the
  quantization error from retraining noise; the float32 stores are checked to come from the float
  model they are compared with.

The manifest's relative video paths are read from the folder holding ``--cache`` (the script
changes into it and writes only to a temporary folder and ``--out``). The load average before and
after is recorded. Prints the JSON record and writes it to ``--out``
(default ``benchmarks/results/int8.json``)::

    python -m benchmarks.int8 --cache /path/to/the/demo/cache --threads 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime

from benchmarks.embed_visual import export_backbone
from benchmarks.int8_visual import agreement, decoded_faces, run_all
from pipeline.audio.windows import video_audio
from pipeline.config import to_dict
from pipeline.data.manifest import read_manifest
from pipeline.embed.audio import EmbedAudioConfig, embed_audio
from pipeline.embed.runner import ClusterOptions, InferenceOptions
from pipeline.embed.visual import EmbedVisualConfig, embed_visual
from pipeline.evaluate.scoring import EvaluateConfig, evaluate
from pipeline.inference.audio import AudioEmbedder
from pipeline.model_files.audio import quantize_tdnn
from pipeline.model_files.audio import read_audio_config as load_audio_config
from pipeline.model_files.int8 import CalibrationConfig, QuantSettings, int8_path
from pipeline.model_files.onnx_export import make_session
from pipeline.model_files.precision import recorded_params
from pipeline.model_files.visual import quantize_visual
from pipeline.models.preprocess import PREPROCESSING
from pipeline.storage.embedding_store import EmbeddingStore, fingerprint
from tooling.bench import harness
from tooling.bench.timing import rate

FULL_RANGE = QuantSettings(reduce_range=False)
VARIANTS: dict[str, QuantSettings] = {
    "qdq_u8s8_channel_7bit": QuantSettings(),                  # what the pipeline writes
    "qdq_u8s8_channel": FULL_RANGE,
    "qdq_u8s8_tensor": replace(FULL_RANGE, per_channel=False),
    "qdq_s8s8_channel": replace(FULL_RANGE, activations="int8"),
    "qdq_u8u8_channel": replace(FULL_RANGE, weights="uint8"),
    "qoperator_u8s8_channel": replace(FULL_RANGE, format="QOperator"),
    "qoperator_u8s8_channel_7bit": QuantSettings(format="QOperator"),
    "qdq_conv_only": replace(FULL_RANGE, operators=("Conv",)),
    "qdq_preprocessed": replace(FULL_RANGE, preprocess=True),
}


def alternate(runs: dict[str, Callable[[], Any]], items: int, rounds: int, min_seconds: float) -> dict[str, list[float]]:
    """Items/s of every run, each timed once per round in turn."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            rates[name].append(rate(fn, items, min_seconds))
    return rates


def summary(rates: dict[str, list[float]]) -> dict[str, Any]:
    """Medians per run, every run's ratio to float32, and the rounds."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"per_s": {name: round(v, 2) for name, v in medians.items()},
            "vs_float32": {name: round(v / medians["float32"], 3) for name, v in medians.items() if name != "float32"},
            "rounds": {name: [round(v, 2) for v in values] for name, values in rates.items()}}


def visual_part(float_path: Path, frames: Path, work: Path, variants: list[str], args: argparse.Namespace) -> dict:
    """Faces/s of ``float_path`` and of its int8 model under each variant, alternating, and their agreement."""
    images = decoded_faces(frames, args.faces)
    sessions = {"float32": make_session(float_path, "cpu", args.threads)}
    for name in variants:
        out = float_path.parent / f"{float_path.stem}.{name}.onnx"
        quantize_visual(float_path, frames, out, CalibrationConfig(n_crops=args.crops), VARIANTS[name])
        sessions[name] = make_session(out, "cpu", args.threads)
    runs = {name: (lambda s=session: run_all(s, images, args.batch_size)) for name, session in sessions.items()}
    result = summary(alternate(runs, len(images), args.rounds, args.min_seconds))
    reference = run_all(sessions["float32"], images, args.batch_size)
    result["agreement"] = {name: agreement(reference, run_all(sessions[name], images, args.batch_size))
                           for name in variants}
    result["faces"] = len(images)
    return result


def training_audio(manifest_path: Path, tdnn: Path) -> dict[str, Any]:
    """The soundtracks of the demo's training videos (the windows train-audio calibrates on)."""
    cfg = load_audio_config(tdnn)
    audios = {}
    for record in read_manifest(manifest_path).subjects:
        if record.video_path and "train" in (record.au_split, record.expr_split) and record.video not in audios:
            audios[record.video] = video_audio(record.video_path, record.n_frames, record.fps, cfg)
    return audios


def tdnn_part(model_dir: Path, audios: dict[str, Any], args: argparse.Namespace) -> dict:
    """Windows/s of the float32 and int8 TDNN over the first ``--audio-videos`` soundtracks, alternating."""
    names = sorted(audios)[: args.audio_videos]
    embedders = {"float32": AudioEmbedder.from_file(model_dir / "tdnn.onnx", "cpu", args.threads),
                 "int8": AudioEmbedder.from_file(int8_path(model_dir / "tdnn.onnx"), "cpu", args.threads)}
    windows = sum(int(audios[name].present.sum()) for name in names)

    def run(embedder: AudioEmbedder) -> list[np.ndarray]:
        return [embedder.embed(audios[name], args.batch_size) for name in names]

    result = summary(alternate({k: (lambda e=e: run(e)) for k, e in embedders.items()}, windows, args.rounds,
                               args.min_seconds))
    a, b = (np.concatenate([e[audios[n].present] for e, n in zip(run(embedders[k]), names)]).astype(np.float64)
            for k in ("float32", "int8"))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    result.update(windows=windows, videos=names, embedding_cosine_mean=round(float(cosine.mean()), 5),
                  embedding_cosine_min=round(float(cosine.min()), 5))
    return result


def scores_part(cache: Path, onnx_dir: Path, audio_dir: Path, work: Path, args: argparse.Namespace) -> dict:
    """Validation scores of the same trained models on the float32 stores of ``cache`` and on int8-built ones."""
    prepared = cache / "prepared"
    inference, cluster = InferenceOptions(device="cpu", batch_size=64), ClusterOptions(n_workers=1, processes=False)
    float_store = EmbeddingStore.open_read(cache / "embeddings" / "visual.zarr")
    float_cfg = EmbedVisualConfig()
    expected = fingerprint(onnx_dir / "visual.onnx", {"embed_visual": recorded_params(to_dict(float_cfg)),
                                                      "preprocessing": PREPROCESSING})
    stores = {"float32": (cache / "embeddings" / "visual.zarr", cache / "embeddings" / "audio.zarr"),
              "int8": (work / "visual.int8.zarr", work / "audio.int8.zarr")}
    embed_visual(prepared, cache / "frames" / "frames.h5", onnx_dir / "visual.onnx", stores["int8"][0],
                 EmbedVisualConfig(precision="int8"), inference, cluster, work / "w-visual", progress=False)
    embed_audio(prepared, audio_dir, stores["int8"][1], EmbedAudioConfig(precision="int8"), inference, cluster,
                work / "w-audio", progress=False)
    manifest = read_manifest(prepared / "manifest.json")
    metrics = {name: evaluate(manifest, visual, audio, cache / "audio" / "model.pt", cache / "sequence" / "model.pt",
                              work / f"eval-{name}", work / f"eval-{name}.json", EvaluateConfig(), device="cpu")
               for name, (visual, audio) in stores.items()}
    result: dict[str, Any] = {"float32_store_from_this_model": float_store.fingerprint == expected,
                              "measured": "same trained fusion head and sequence model, stores rebuilt from int8"}
    for frames in ("face_frames", "all_frames"):
        for variant in ("visual", "fusion", "sequence"):
            for task in ("au", "expr"):
                f, q = (metrics[p][frames][variant][task]["score"] for p in ("float32", "int8"))
                result.setdefault(frames, {}).setdefault(variant, {})[task] = {
                    "float32": round(f, 4), "int8": round(q, 4), "change": round(q - f, 4)}
    return result


def main() -> None:
    parser = harness.parser("int8", __doc__, full_doc=True)
    parser.add_argument("--cache", type=Path, required=True, help="the demo pipeline's cache folder (read only)")
    parser.add_argument("--variants", default="qdq_u8s8_channel_7bit,qdq_u8s8_channel", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--paper-width", type=float, default=1.0, help="width_mult of the random IResNet18 (0: skip)")
    parser.add_argument("--crops", type=int, default=256, help="calibration crops")
    parser.add_argument("--faces", type=int, default=128, help="faces timed per call")
    parser.add_argument("--audio-videos", type=int, default=3, help="demo soundtracks timed per call")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="per timing")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: visual, tdnn, scores")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    skip = set(filter(None, args.skip.split(",")))
    # the manifest names videos relative to the project folder that holds the cache
    args.cache, args.out = args.cache.resolve(), args.out.resolve()
    os.chdir(args.cache.parent)

    bench = harness.start("int8")
    results: dict[str, Any] = {"threads": args.threads, "batch_size": args.batch_size,
                               "onnxruntime": onnxruntime.__version__, "calibration_crops": args.crops}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the models beside their int8 copies, as the pipeline lays them out; the cache is only read
        onnx_dir, audio_dir = work / "onnx", work / "audio"
        onnx_dir.mkdir()
        shutil.copy(args.cache / "onnx" / "visual.onnx", onnx_dir / "visual.onnx")
        shutil.copytree(args.cache / "audio", audio_dir)
        frames = args.cache / "frames" / "frames.h5"
        quantize_visual(onnx_dir / "visual.onnx", frames, config=CalibrationConfig(n_crops=args.crops))
        audios = training_audio(args.cache / "prepared" / "manifest.json", audio_dir / "tdnn.onnx")
        results["tdnn_quantization"] = {k: v for k, v in quantize_tdnn(audio_dir / "tdnn.onnx", audios).items()
                                        if k != "calibration"}
        if "visual" not in skip:
            results["visual"] = {"demo": visual_part(onnx_dir / "visual.onnx", frames, work, variants, args)}
            if args.paper_width > 0:
                (work / "paper").mkdir()
                paper = export_backbone(work / "paper" / "visual.onnx", "iresnet18", args.paper_width, 0)
                results["visual"][f"width_{args.paper_width}"] = visual_part(paper, frames, work, variants, args)
        if "tdnn" not in skip:
            results["tdnn"] = tdnn_part(audio_dir, audios, args)
        if "scores" not in skip:
            results["scores"] = scores_part(args.cache, onnx_dir, audio_dir, work, args)
    bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
