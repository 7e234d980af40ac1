"""The full-size bill: each stage's wall time and disk on the whole of Aff-Wild2, from rates measured here.

Measures, in one run and with small timed inputs, the rate of every piece a stage spends its time on
(probing videos, packing and reading crops, training and embedding the visual model of each
profile, its ONNX export, log-mels, the TDNN, the sequence model), reads the bytes per frame of the
stores a finished run wrote (``--cache``: frames.h5, labels, the two Zarr stores; only sizes are
read), and extrapolates them with ``tooling.full_size`` to ``--frames`` frames of ``--videos``
videos for two profiles: ``demo`` (params.yaml as it is) and ``paper`` (README "The paper profile"
plus its suggestions for a full-size run). Method and assumptions: docs/full_size.md. Prints the
JSON record and writes it to ``--out``.

    python -m benchmarks.full_size_bill --cache cache
    python -m benchmarks.full_size_bill --quick --out /tmp/bill.json   # seconds: checks, not figures
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import audio_tdnn, visual_throughput
from benchmarks.pack_frames import make_crops, read_rate
from benchmarks.probe_video import write_video
from pipeline.config import load_section
from pipeline.data.manifest import read_manifest
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.video import probe_video
from pipeline.inference.features import feature_dim
from pipeline.models.multitask import build_model
from pipeline.models.sequence import SequenceArch, SequenceModel
from pipeline.train.alternating import ROTATION, multitask_step
from pipeline.train.losses import au_bce_loss
from tooling.full_size import Profile, Workload, stage_bill, total, visual_key
from tooling.bench import harness
from tooling.bench.timing import rate

# The paper's count of Aff-Wild2 (method paper, section 1: "548 videos with 2,813,201 frames").
PAPER_VIDEOS = 548
PAPER_FRAMES = 2_813_201
# speechbrain's x-vector TDNN sizes: README's suggestion for a full-size run (the paper states only 512-d).
XVECTOR_CHANNELS = (512, 512, 512, 512, 1500)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big the timed inputs are (``--quick`` shrinks them to seconds)."""

    video_seconds: float = 30.0
    crop_subjects: int = 2
    crop_frames: int = 300
    read_batches: int = 40
    visual_batch: int = 16
    visual_min_iters: int = 2
    audio_seconds: float = 20.0
    audio_batch_segments: int | None = None   # None: train_audio.batch_segments of the params
    min_seconds: float = 2.0
    thread_rounds: int = 3


QUICK = Sizes(thread_rounds=1, video_seconds=2.0, crop_subjects=1, crop_frames=16, read_batches=2, visual_batch=2,
              visual_min_iters=1, audio_seconds=2.0, audio_batch_segments=2, min_seconds=0.0)


def profiles(params: Path) -> list[Profile]:
    """The demo profile (params.yaml as it is) and the paper profile (its overrides; see docs/full_size.md)."""
    pre, faces = load_section(params, "pretrain_face"), load_section(params, "synth_faces")
    visual, audio, seq = (load_section(params, s) for s in ("finetune_visual", "train_audio", "train_sequence"))
    holdout = round(pre["holdout_share"] * faces["identities"]) * faces["images_per_identity"]
    demo = Profile(
        name="demo", backbone=visual["backbone"], width_mult=float(visual["width_mult"]),
        pretrain_epochs=pre["epochs"], pretrain_images_per_epoch=pre["images_per_epoch"] or
        faces["identities"] * faces["images_per_identity"], pretrain_verification_images=holdout,
        finetune_epochs=visual["epochs"], max_frames_per_epoch=visual["max_frames_per_epoch"],
        tdnn_channels=tuple(audio["tdnn"]["channels"]), audio_epochs=audio["epochs"],
        sequence_epochs=seq["epochs"], sequence_stride=seq["stride"], sequence_d_model=seq["d_model"],
        sequence_heads=seq["heads"], sequence_batch=seq["batch_size"], audio_segment_frames=audio["segment_frames"],
        audio_max_segments=audio["max_segments"], sequence_max_windows=seq["max_windows"],
        sources={"everything": "params.yaml"},
    )
    paper = dataclasses.replace(
        demo, name="paper", backbone="iresnet100", width_mult=1.0, pretrain_epochs=0,
        max_frames_per_epoch=None, audio_max_segments=None, sequence_max_windows=None, tdnn_channels=XVECTOR_CHANNELS,
        sequence_d_model=512, sequence_heads=8, sequence_batch=64,
        sources={
            "backbone, width_mult": "paper: iresnet100, width 1.0",
            "pretrain_face.epochs": "paper profile: 0 (a Glint360K r100 checkpoint is published as it is)",
            "finetune_visual.max_frames_per_epoch, train_audio.max_segments, train_sequence.max_windows":
                "docs/paper_profile.md's full-size suggestion: null (every training frame)",
            "train_audio.tdnn.channels": "docs/paper_profile.md's full-size suggestion: x-vector sizes 512,512,512,512,1500",
            "train_sequence d_model, heads, batch_size": "docs/sequence.md's full-size suggestion: 512, 8, 64",
            "epochs of every trainer": "params.yaml (the paper states none)",
        },
    )
    return [demo, paper]


def measure_probe(work: Path, sizes: Sizes) -> float:
    """CPU seconds per hour of video of ``prepare``'s frame count (``demux``), fastest of 2 probes."""
    path = write_video(work / "probe.mp4", sizes.video_seconds)
    hours = probe_video(path).duration_s / 3600
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        probe_video(path, "demux")
        best = min(best, time.process_time() - start)
    return best / hours


def measure_frames(work: Path, sizes: Sizes, workers: int) -> dict[str, float]:
    """pack-frames' faces/s (JPEG verify + store, ``workers`` processes) and random batch reads (decoded)."""
    manifest = make_crops(work / "crops", sizes.crop_subjects, sizes.crop_frames)
    store = work / "frames.h5"
    stats = pack_frames(manifest, store, PackConfig(verify="decode"), workers=workers)
    # the rate is the stage's own count of faces over its own timer (process start-up included)
    return {"pack_faces_per_s": stats["faces"] / stats["seconds"],
            "read_faces_per_s": read_rate(store, manifest, sizes.read_batches, 64),
            "faces_timed": stats["faces"]}


def measure_visual(backbone: str, width_mult: float, work: Path, sizes: Sizes, threads: int) -> dict[str, Any]:
    """Training images/s, torch and onnxruntime faces/s, export seconds and ONNX bytes of one visual model."""
    args = argparse.Namespace(batch=sizes.visual_batch, min_iters=sizes.visual_min_iters, min_seconds=0.0,
                              threads=threads, parity_rtol=1e-3)
    result = visual_throughput.bench_backbone(backbone, torch.device("cpu"), "cpu", args, work, width_mult)
    return {**result, "batch": sizes.visual_batch}


def thread_check(backbone: str, width_mult: float, threads: int, rounds: int, seconds: float) -> dict[str, Any]:
    """Training images/s of one visual model at 1 thread and at ``threads``, in alternating rounds.

    On a machine whose cores other processes also use, more threads than free cores can make torch
    slower, not faster; this ratio, measured side by side, says whether that happened during the run.
    """
    torch.manual_seed(0)
    model = build_model({"backbone": backbone, "width_mult": width_mult, "dropout": 0.0})
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, targets = torch.randn(16, 3, 112, 112), torch.randint(0, 2, (16, 12))
    pos_weight = torch.full((12,), 2.0)

    def step() -> None:
        au = model(images)[0]
        multitask_step(model, optimizer, "au", au_bce_loss(au, targets, pos_weight))

    per_round: dict[str, list[float]] = {"1": [], str(threads): []}
    for _ in range(rounds):
        for count in per_round:
            torch.set_num_threads(int(count))
            per_round[count].append(rate(step, len(images), seconds))
    torch.set_num_threads(threads)
    medians = {count: sorted(values)[len(values) // 2] for count, values in per_round.items()}
    return {"model": visual_key(backbone, width_mult), "images_per_s": per_round, "median_images_per_s": medians,
            "ratio": medians[str(threads)] / medians["1"], "threads": threads}


def measure_tdnn(channels: tuple[int, ...], audio: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """Log-mel seconds/s, TDNN training frames/s (the params' segments) and shared-span embedding frames/s."""
    r = audio_tdnn.measure(list(channels), audio["audio"]["context_s"], 30.0, audio["segment_frames"],
                           sizes.audio_batch_segments or audio["batch_segments"], min_seconds=sizes.min_seconds, seconds=sizes.audio_seconds,
                           baselines=False)
    return {"logmel_audio_s_per_s": r["logmel_audio_seconds_per_s"],
            "train_frames_per_s": r["training_frames_per_s"][f"segments_of_{audio['segment_frames']}"],
            "embed_frames_per_s": r["inference_frames_per_s"]["shared_spans"],
            "parameters": r["tdnn"]["parameters"]}


def measure_sequence(profile: Profile, seq: dict[str, Any], sizes: Sizes) -> dict[str, float]:
    """Training and inference windows/s of the sequence model on random features (both modalities)."""
    torch.manual_seed(0)
    arch = SequenceArch(input_dim=feature_dim(seq["modalities"]), d_model=profile.sequence_d_model,
                        layers=seq["layers"], heads=profile.sequence_heads, dropout=seq["dropout"],
                        max_len=seq["window"], ff_mult=seq["ff_mult"])
    model = SequenceModel(arch)
    batch = profile.sequence_batch
    features = torch.randn(batch, seq["window"], arch.input_dim)
    au = torch.randint(0, 2, (batch, seq["window"], 12)).float()
    optimizer = torch.optim.SGD(model.parameters(), lr=seq["lr"], momentum=seq["momentum"])

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        au_logits = model(features)[0]
        nn.functional.binary_cross_entropy_with_logits(au_logits, au).backward()
        optimizer.step()

    def infer() -> None:
        with torch.inference_mode():
            model(features)

    model.train()
    train = rate(train_step, batch, sizes.min_seconds)
    model.eval()
    return {"train_windows_per_s": train, "infer_windows_per_s": rate(infer, batch, sizes.min_seconds)}


def disk_per_frame(cache: Path) -> dict[str, Any]:
    """Bytes per frame of the stores a run wrote under ``cache`` (sizes only; nothing is opened for writing)."""
    manifest_path = cache / "prepared" / "manifest.json"
    manifest = read_manifest(manifest_path)
    affwild2 = [s for s in manifest.subjects if s.source == "affwild2"]
    faces = sum(s.n_faces for s in manifest.subjects)
    frames_all = sum(s.n_frames for s in manifest.subjects)
    frames = sum(s.n_frames for s in affwild2)
    video_frames = sum(group[0].n_frames for group in manifest.videos().values())
    sizes = {"frames_h5": _bytes(cache / "frames" / "frames.h5"),
             "labels": _bytes(cache / "prepared" / "labels.h5") + _bytes(manifest_path),
             "visual_zarr": _bytes(cache / "embeddings" / "visual.zarr"),
             "audio_zarr": _bytes(cache / "embeddings" / "audio.zarr")}
    counts = {"frames_h5": faces, "labels": frames_all, "visual_zarr": frames, "audio_zarr": video_frames}
    return {"bytes_per_frame": {name: sizes[name] / max(1, counts[name]) for name in sizes},
            "bytes": sizes, "counted": counts, "cache": str(cache)}


def _bytes(path: Path) -> int:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; --cache must point at a finished run's cache folder")
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_rates(plans: list[Profile], params: Path, sizes: Sizes, threads: int) -> dict[str, Any]:
    """Every rate the bill needs, measured once per distinct model of the profiles.

    ``seconds`` in the result holds the wall time each part of the measurement took.
    """
    audio, seq = load_section(params, "train_audio"), load_section(params, "train_sequence")
    rates: dict[str, Any] = {"visual": {}, "tdnn": {}, "sequence": {}}
    seconds: dict[str, float] = {}

    def timed(part: str, fn: Any, *fn_args: Any) -> Any:
        began = time.perf_counter()
        out = fn(*fn_args)
        seconds[part] = round(time.perf_counter() - began, 1)
        return out

    with tempfile.TemporaryDirectory(prefix="full-size-bill-") as tmp:
        work = Path(tmp)
        rates["probe_cpu_s_per_video_hour"] = timed("probe", measure_probe, work, sizes)
        # one packing process for tiny inputs: starting a pool would cost more than the packing
        rates.update(timed("frames", measure_frames, work, sizes, threads if sizes.crop_frames >= 100 else 1))
        for plan in plans:
            if plan.visual not in rates["visual"]:
                rates["visual"][plan.visual] = timed(f"visual {plan.visual}", measure_visual, plan.backbone,
                                                     plan.width_mult, work, sizes, threads)
            if plan.tdnn not in rates["tdnn"]:
                rates["tdnn"][plan.tdnn] = timed(f"tdnn {plan.tdnn}", measure_tdnn, plan.tdnn_channels, audio, sizes)
            if plan.sequence not in rates["sequence"]:
                rates["sequence"][plan.sequence] = timed(f"sequence {plan.sequence}", measure_sequence, plan, seq, sizes)
        rates["thread_check"] = timed("thread check", thread_check, plans[0].backbone, plans[0].width_mult, threads,
                                      sizes.thread_rounds, sizes.min_seconds / 2)
    # The log-mel front end is the same for every TDNN: keep the first profile's measurement.
    rates["logmel_audio_s_per_s"] = rates["tdnn"][plans[0].tdnn]["logmel_audio_s_per_s"]
    rates["seconds"] = seconds
    return rates


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the options, measure, extrapolate, print and write the record; returns it."""
    parser = harness.parser("full_size_bill", __doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="a finished run's cache folder (sizes are read)")
    parser.add_argument("--videos", type=int, default=PAPER_VIDEOS)
    parser.add_argument("--frames", type=int, default=PAPER_FRAMES)
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second of the videos (audio hours)")
    parser.add_argument("--face-share", type=float, default=1.0, help="share of frames with a face crop")
    parser.add_argument("--train-share", type=float, default=0.64, help="share of frames each trainer trains on per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny inputs and the demo's models for both "
                        "profiles: checks the script in seconds; its figures are not for planning")
    args = parser.parse_args(argv)
    bench = harness.start("full_size_bill", argv)
    torch.set_num_threads(args.threads)
    work = Workload(videos=args.videos, frames=args.frames, fps=args.fps, face_share=args.face_share,
                    train_share=args.train_share)
    plans = profiles(args.params)
    if args.quick:
        demo = plans[0]
        plans = [demo, dataclasses.replace(
            plans[1], backbone=demo.backbone, width_mult=demo.width_mult, tdnn_channels=demo.tdnn_channels,
            sequence_d_model=demo.sequence_d_model, sequence_heads=demo.sequence_heads,
            sequence_batch=demo.sequence_batch)]
    disk = disk_per_frame(args.cache)
    started = time.perf_counter()
    rates = measure_rates(plans, args.params, QUICK if args.quick else Sizes(), args.threads)
    bills = {plan.name: stage_bill(rates, disk["bytes_per_frame"], work, plan) for plan in plans}
    results = {
        "quick": args.quick,
        "measure_seconds": round(time.perf_counter() - started, 1),
        "workload": {**dataclasses.asdict(work), "faces": work.faces, "train_frames": work.train_frames,
                     "eval_frames": work.eval_frames, "audio_hours": work.audio_seconds / 3600,
                     "tasks": list(ROTATION)},
        "workload_sources": {"videos, frames": "paper (section 1): 548 videos, 2,813,201 frames",
                             "fps, face_share, train_share": "our assumption (docs/full_size.md)"},
        "profiles": {plan.name: {**dataclasses.asdict(plan), "visual": plan.visual, "tdnn": plan.tdnn,
                                 "sequence": plan.sequence} for plan in plans},
        "rates": rates,
        "rate_units": {"probe_cpu_s_per_video_hour": "CPU seconds per hour of video (demux frame count)",
                       "pack_faces_per_s": "crops verified (JPEG decode) and stored per second",
                       "read_faces_per_s": "crops read from frames.h5 and decoded per second (random batches of 64)",
                       "visual.*.train_images_per_s": "images per second of a training step (forward, backward, SGD)",
                       "visual.*.embed_*_faces_per_s": "faces per second of inference (torch eager / onnxruntime)",
                       "visual.*.export_s": "seconds of the ONNX export with its parity check",
                       "visual.*.onnx_bytes": "bytes of the exported ONNX file",
                       "logmel_audio_s_per_s": "seconds of audio turned into log-mels per second",
                       "tdnn.*.train_frames_per_s": "frames per second of a TDNN training step (the params' segments)",
                       "tdnn.*.embed_frames_per_s": "frames per second of TDNN embedding (shared spans)",
                       "sequence.*.*_windows_per_s": "30-frame windows per second (training step / inference)"},
        "disk": disk,
        "bill": {name: {"stages": rows, "total": total(rows)} for name, rows in bills.items()},
        "gpu": "not measured (no GPU machine was available)",
    }
    return bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
