"""Sequence-model benchmarks on generated embedding stores; prints one JSON object.

Parts (``--part``, default all):

* ``cache_vs_recompute``: one train-sequence epoch (training + whole-video validation) from the
  cached embeddings, against the same epoch plus recomputing every frame's embeddings once
  (IResNet over its 112x112 crop, log-mel + TDNN over its audio). The recompute cost is timed on a
  subset of frames and extrapolated per frame (said so in the output); it is a lower bound, as a
  real recompute would embed each frame once per window covering it.
* ``loader``: windows/s of the training loader (float16 buffers -> composed float32 batches)
  against slicing the same windows from one in-RAM float32 array.
* ``scale``: an Aff-Wild2-size cache (548 videos, 2.8 M frames at ``--scale 1``) of random
  embeddings written to Zarr under ``--work``: generation time, store size, load time, resident
  memory against the estimate, and an epoch's training time extrapolated from timed steps.

Run: ``OMP_NUM_THREADS=2 python -m benchmarks.sequence_cache --part all --scale 1.0``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.audio.features import AudioConfig, LogMel
from pipeline.data.manifest import read_manifest
from pipeline.models import iresnet
from pipeline.models.preprocess import to_model_input
from pipeline.models.sequence import SequenceModel
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.train.alternating import TaskSchedule, alternating_batches, multitask_step
from pipeline.train.losses import compute_pos_weight
from pipeline.train.sequence import SequenceTrainConfig, batch_loss, fit, task_splits
from pipeline.train.sequence_data import (
    WindowLoader, estimate_manifest_memory, load_sequence_cache,
)
from pipeline.train.sequence_synth import SyntheticCacheConfig, write_synthetic_cache
from tooling.bench import harness

AFFWILD2_VIDEOS = 548
AFFWILD2_FRAMES = 2_800_000
FPS = 30.0


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def demo_cache(work: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """A demo-size cache (about 9000 frames in 40 videos)."""
    root = work / "demo"
    if (root / "manifest.json").is_file():
        return root / "manifest.json", root / "visual.zarr", root / "audio.zarr"
    return write_synthetic_cache(root, SyntheticCacheConfig(n_videos=40, min_frames=150, max_frames=300, seed=seed))


def time_recompute_per_frame(arch: str, width_mult: float, frames: int, device: torch.device) -> dict[str, Any]:
    """Seconds per frame to embed ``frames`` crops with an IResNet and their audio with log-mel + TDNN."""
    torch.manual_seed(0)
    visual = getattr(iresnet, arch)(width_mult=width_mult).to(device).eval()
    crops = np.random.default_rng(0).integers(0, 256, size=(frames, 112, 112, 3), dtype=np.uint8)
    audio_cfg = AudioConfig()
    logmel = LogMel(audio_cfg).to(device)
    tdnn = TDNN(TDNNConfig(in_channels=audio_cfg.n_mels)).to(device).eval()
    context = audio_cfg.context_frames
    samples = int((frames / FPS + 2 * audio_cfg.context_s) * audio_cfg.sample_rate)
    waveform = torch.randn(1, samples, device=device)
    with torch.inference_mode():
        visual(to_model_input(crops[:2], device))      # warm-up
        start = time.perf_counter()
        for first in range(0, frames, 32):
            visual(to_model_input(crops[first:first + 32], device))
        _sync(device)
        visual_s = (time.perf_counter() - start) / frames
        start = time.perf_counter()
        mel = logmel(waveform)                           # (1, 64, T) over the whole stretch
        hop_frames = audio_cfg.sample_rate / audio_cfg.hop_length / FPS   # mel frames per video frame
        offsets = torch.clamp((torch.arange(frames, device=device) * hop_frames).long(), max=mel.shape[-1] - context)
        tdnn.forward_windows(mel, torch.zeros(frames, dtype=torch.long, device=device), offsets, context)
        _sync(device)
        audio_s = (time.perf_counter() - start) / frames
    return {"visual_model": f"{arch}(width_mult={width_mult})", "audio_model": "log-mel + TDNN (x-vector profile)",
            "timed_frames": frames, "visual_s_per_frame": visual_s, "audio_s_per_frame": audio_s}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_cache_vs_recompute(work: Path, config: SequenceTrainConfig, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    manifest_path, visual, audio = demo_cache(work)
    manifest = read_manifest(manifest_path)
    splits = task_splits(manifest, config.sources)
    start = time.perf_counter()
    cache = load_sequence_cache(manifest, visual, audio, splits.all_subjects(), config.modalities)
    load_s = time.perf_counter() - start
    frames = int(cache.offsets[-1])
    shutil.rmtree(work / "fit", ignore_errors=True)
    start = time.perf_counter()
    fit(cache, splits, replace(config, epochs=1), work / "fit", device, mode="last")   # time training alone
    epoch_s = time.perf_counter() - start
    recompute = time_recompute_per_frame(args.arch, args.width_mult, args.recompute_frames, device)
    per_frame = recompute["visual_s_per_frame"] + recompute["audio_s_per_frame"]
    recompute_epoch_s = epoch_s + frames * per_frame
    return {
        "frames": frames,
        "cache_load_s": load_s,
        "cached_epoch_s": epoch_s,
        "recompute": recompute,
        "recompute_epoch_s_extrapolated": recompute_epoch_s,
        "speedup": recompute_epoch_s / epoch_s,
        "goal": ">= 100x",
        "note": (f"recompute time per frame measured on {args.recompute_frames} frames and multiplied by the "
                 f"{frames} frames of the epoch; each frame embedded once (lower bound)"),
    }


def bench_loader(work: Path, config: SequenceTrainConfig, batches: int) -> dict[str, Any]:
    manifest_path, visual, audio = demo_cache(work)
    manifest = read_manifest(manifest_path)
    names = manifest.names()
    cache = load_sequence_cache(manifest, visual, audio, names, config.modalities)
    windows = cache.windows(names, config.window, config.stride)
    loader = WindowLoader(cache, windows, config.window, config.batch_size, shuffle=True, seed=0)
    # Baselines: the same windows sliced from one in-RAM (frames, D) array of composed features,
    # float16 (the loader's output precision) and float32.
    arrays = {"float16": np.concatenate([cache.subject_features(n).astype(np.float16) for n in names])}
    arrays["float32"] = arrays["float16"].astype(np.float32)
    order = np.random.default_rng(0).permutation(len(windows))
    starts = cache.offsets[windows[order, 0]] + windows[order, 1]
    ends = cache.offsets[windows[order, 0] + 1]

    def loader_pass() -> int:
        count = 0
        while count < batches * config.batch_size:
            for batch in loader:
                count += len(batch.features)
        return count

    def numpy_pass(array: np.ndarray) -> int:
        count = 0
        while count < batches * config.batch_size:
            for first in range(0, len(starts), config.batch_size):
                chunk = []
                for s, e in zip(starts[first:first + config.batch_size], ends[first:first + config.batch_size]):
                    window = array[s:min(s + config.window, e)]
                    if len(window) < config.window:  # short subject: pad like the loader does
                        window = np.pad(window, ((0, config.window - len(window)), (0, 0)))
                    chunk.append(window)
                np.stack(chunk)
                count += len(chunk)
        return count

    passes = {"loader": loader_pass, **{f"numpy_slicing_{k}": (lambda a=a: numpy_pass(a)) for k, a in arrays.items()}}
    results = {}
    for name, fn in passes.items():
        fn()  # warm-up
        start = time.perf_counter()
        count = fn()
        results[f"{name}_windows_per_s"] = count / (time.perf_counter() - start)
    loader_rate = results["loader_windows_per_s"]
    return {**results,
            "ratio_vs_float16_slicing": loader_rate / results["numpy_slicing_float16_windows_per_s"],
            "ratio_vs_float32_slicing": loader_rate / results["numpy_slicing_float32_windows_per_s"],
            "goal": ">= 0.5x", "loader_output": "float16 (B, L, D), converted to float32 on the device",
            "window": config.window, "batch_size": config.batch_size, "feature_dim": int(arrays["float32"].shape[1])}


def bench_scale(work: Path, config: SequenceTrainConfig, scale: float, steps: int, device: torch.device) -> dict[str, Any]:
    n_videos = max(1, round(AFFWILD2_VIDEOS * scale))
    mean = AFFWILD2_FRAMES / AFFWILD2_VIDEOS
    synth = SyntheticCacheConfig(
        n_videos=n_videos, min_frames=int(0.5 * mean), max_frames=int(1.5 * mean), validation_fraction=0.15,
        random_embeddings=True, seed=0,
    )
    root = work / f"scale-{scale:g}"
    free = shutil.disk_usage(work).free
    start = time.perf_counter()
    if not (root / "manifest.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        write_synthetic_cache(root, synth)
    generate_s = time.perf_counter() - start
    manifest = read_manifest(root / "manifest.json")
    splits = task_splits(manifest, config.sources)
    names = splits.all_subjects()
    estimate = estimate_manifest_memory(manifest, names, config.modalities)
    rss_before = rss_bytes()
    start = time.perf_counter()
    cache = load_sequence_cache(manifest, root / "visual.zarr", root / "audio.zarr", names, config.modalities)
    load_s = time.perf_counter() - start
    rss_after = rss_bytes()
    frames = int(cache.offsets[-1])
    step_s, steps_per_epoch = _time_training_steps(cache, splits, config, steps, device)
    return {
        "scale": scale, "videos": n_videos, "frames": frames,
        "store_bytes": dir_bytes(root / "visual.zarr") + dir_bytes(root / "audio.zarr"),
        "disk_free_before_bytes": free,
        "generate_s": generate_s if generate_s > 1 else None,
        "load_s": load_s, "load_frames_per_s": frames / load_s,
        "cache_nbytes": cache.nbytes, "estimate_bytes": estimate,
        "rss_growth_bytes": rss_after - rss_before, "peak_rss_bytes": peak_rss_bytes(),
        "train_step_s": step_s, "steps_per_epoch": steps_per_epoch,
        "epoch_train_s_extrapolated": step_s * steps_per_epoch,
        "full_scale_extrapolation": {
            "frames": AFFWILD2_FRAMES,
            "cache_bytes": cache.nbytes * AFFWILD2_FRAMES / frames,
            "load_s": load_s * AFFWILD2_FRAMES / frames,
            "epoch_train_s": step_s * steps_per_epoch * AFFWILD2_FRAMES / frames,
        },
        "note": f"epoch time = {steps} timed training steps x steps per epoch (validation not included)",
    }


def _time_training_steps(cache, splits, config: SequenceTrainConfig, steps: int, device: torch.device) -> tuple[float, int]:
    torch.manual_seed(0)
    model = SequenceModel(config.arch()).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    pos_weight = compute_pos_weight(np.zeros((1, 12), np.int8), config.pos_weight_cap).to(device)
    loaders = {task: WindowLoader(cache, cache.windows(splits.train[task], config.window, config.stride, task=task),
                                  config.window, config.batch_size, seed=0) for task in ("au", "expr")}
    steps_per_epoch = 2 * max(len(loader) for loader in loaders.values())
    model.train()
    done, start = 0, None
    for task, batch in alternating_batches(TaskSchedule("batch"), 0, loaders):
        if done == 3:  # after warm-up
            _sync(device)
            start = time.perf_counter()
        multitask_step(model, optimizer, task, batch_loss(model, batch, task, pos_weight, config.focal_gamma, device))
        done += 1
        if done == steps + 3:
            break
    _sync(device)
    return (time.perf_counter() - start) / (done - 3), steps_per_epoch


def main() -> None:
    parser = harness.parser("sequence_cache", __doc__, full_doc=True)
    parser.add_argument("--part", choices=("all", "cache_vs_recompute", "loader", "scale"), default="all")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmaffect-sequence-bench"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Aff-Wild2's 548 videos to generate")
    parser.add_argument("--steps", type=int, default=50, help="training steps timed for the scale epoch")
    parser.add_argument("--arch", default="iresnet18", help="IResNet of the recompute baseline")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--recompute-frames", type=int, default=64)
    parser.add_argument("--loader-batches", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    bench = harness.start("sequence_cache")
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    config = SequenceTrainConfig()   # the params.yaml demo defaults (window 30, stride 10, d_model 128)
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "device": str(device),
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                           "config": {k: getattr(config, k) for k in ("modalities", "window", "stride", "d_model",
                                                                      "layers", "heads", "batch_size")}}
    if args.part in ("all", "cache_vs_recompute"):
        out["cache_vs_recompute"] = bench_cache_vs_recompute(args.work, config, args, device)
    if args.part in ("all", "loader"):
        out["loader"] = bench_loader(args.work, config, args.loader_batches)
    if args.part in ("all", "scale"):
        out["scale"] = bench_scale(args.work, config, args.scale, args.steps, device)
    bench.publish(out, torch.get_num_threads(), args.out)


if __name__ == "__main__":
    main()
