"""embed-visual throughput against the pure model rate, Zarr bytes per frame, and read-back rate.

In one run, on the same exported backbone, device and batch size:

* ``pure_faces_per_s``: onnxruntime on batches decoded and normalised beforehand (the ceiling);
* ``task_faces_per_s``: faces / seconds inside the embed tasks (JPEG decoding in the prefetch
  thread, inference, Zarr writing), with one worker running one task at a time, so the ratio
  ``task / pure`` says how well decoding and writing overlap inference (goal >= 0.9);
* ``interleaved``: the same two measured alternately subject by subject in this process (the
  decode-ahead loop of the tasks without dask and Zarr), which cancels load drifts of a shared
  machine: ``decode_ahead_vs_pure`` is the overlap figure least disturbed by other processes;
* ``wall_faces_per_s``: faces / wall time of the whole ``embed_visual`` call, which also pays
  for starting the dask cluster and importing torch in the worker;
* bytes per frame of ``visual.zarr`` and ``audio.zarr`` (on disk, by array), and the rate of
  reading whole entries back.

Without ``--prepared``/``--frames`` it generates the tiny synthetic dataset; ``--copies K`` embeds
each visual subject K times (as separate subjects) for a longer steady state. The backbone is a
randomly initialised IResNet exported like ``export-onnx`` does (``--onnx`` uses a given model).
The audio store comes from a small random TDNN: its bytes per frame do not depend on the TDNN's
width, only on the 512-d float16 output. Prints one JSON object.

    python -m benchmarks.embed_visual --backbone iresnet18 --width-mult 0.5 --copies 4
    python -m benchmarks.embed_visual --device cuda --backbone iresnet50 --batch-size 256 --copies 40
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.audio.features import AudioConfig
from pipeline.config import to_dict
from pipeline.storage.frame_store import FrameStore
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.labels_store import read_all_labels, write_labels
from pipeline.data.manifest import Manifest, read_manifest, write_manifest
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.embed.audio import EmbedAudioConfig, embed_audio
from pipeline.embed.runner import ClusterOptions, InferenceOptions
from pipeline.embed.visual import EmbedVisualConfig, embed_visual, run_visual
from pipeline.inference.visual import VisualEmbedder
from pipeline.model_files.onnx_export import export_onnx, make_session
from pipeline.model_files.visual import export_visual, save_checkpoint
from pipeline.models.multitask import build_model
from pipeline.models.preprocess import to_model_input
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.storage.embedding_store import EmbeddingStore
from tooling.bench import harness


def build_inputs(base: Path, copies: int, seed: int) -> tuple[Path, Path, Path]:
    """Tiny synthetic dataset -> (prepared dir of the videos, prepared dir with ``copies`` x subjects, frames.h5)."""
    root = base / "synthetic"
    generate_dataset(root, SynthConfig.from_preset("tiny", seed=seed))
    prepared = base / "prepared"
    prepare_dataset(root, prepared, PrepareConfig())
    manifest = read_manifest(prepared / "manifest.json")
    labels = read_all_labels(prepared / "labels.h5")
    copied = base / "prepared-copies"
    records = [dataclasses.replace(r, name=f"{r.name}_copy{k}") for k in range(copies) for r in manifest.subjects]
    write_manifest(Manifest(root=manifest.root, subjects=tuple(records)), copied / "manifest.json")
    write_labels(copied / "labels.h5", {r.name: labels[r.name.rsplit("_copy", 1)[0]] for r in records})
    frames = base / "frames.h5"
    pack_frames(read_manifest(copied / "manifest.json"), frames, PackConfig())
    return prepared, copied, frames


def export_backbone(path: Path, backbone: str, width_mult: float, seed: int) -> Path:
    """Export a randomly initialised multi-task model with ``backbone`` as ``visual.onnx``.

    The batch-norm statistics are first estimated on random images: a fresh IResNet's embeddings
    otherwise reach ~1e5, beyond float16 and unlike a trained model's.
    """
    torch.manual_seed(seed)
    arch = {"backbone": backbone, "width_mult": width_mult, "dropout": 0.0}
    model = build_model(arch)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 112, 112))
    checkpoint = path.with_suffix(".pt")
    save_checkpoint(checkpoint, model.eval(), arch)
    export_visual(checkpoint, path)
    return path


def export_tdnn(model_dir: Path, seed: int) -> Path:
    """Export a small random TDNN as ``tdnn.onnx`` with the audio config in its metadata."""
    torch.manual_seed(seed)
    audio = AudioConfig()
    tdnn = TDNN(TDNNConfig(channels=(32, 32, 64), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1))).eval()
    export_onnx(tdnn, (torch.zeros(2, audio.n_mels, audio.context_frames),), model_dir / "tdnn.onnx", ("mel",),
                ("embedding",), {"mel": {0: "batch"}, "embedding": {0: "batch"}},
                {"model": "tdnn", "audio_config": to_dict(audio)})
    return model_dir


def pure_rate(onnx: Path, frames_path: Path, device: str, batch_size: int, max_faces: int) -> dict[str, Any]:
    """Faces/s of the bare session on batches decoded beforehand (one intra-op thread, as in the tasks)."""
    frames = FrameStore(frames_path)
    batches, faces = [], 0
    for name in frames.names():
        index = np.flatnonzero(frames.face_present(name))
        for i in range(0, len(index), batch_size):
            if faces >= max_faces:
                break
            chunk = index[i: i + batch_size]
            batches.append(to_model_input(frames.read(name, chunk)).numpy())
            faces += len(chunk)
    session = make_session(onnx, device, threads=1)
    session.run(None, {"image": batches[0]})  # warm-up (memory arenas, CUDA kernels)
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {"image": batch})
    seconds = time.perf_counter() - start
    return {"faces": faces, "seconds": seconds, "faces_per_s": faces / seconds, "providers": session.get_providers()}


def interleaved_rates(onnx: Path, frames_path: Path, device: str, batch_size: int, max_faces: int) -> dict[str, Any]:
    """Per subject, the bare model on pre-decoded batches, then the tasks' decode-ahead loop on the same frames.

    Alternating subject by subject cancels drifts of a shared machine's load between the two.
    """
    frames = FrameStore(frames_path)
    session = make_session(onnx, device, threads=1)
    embedder = VisualEmbedder.from_onnx(onnx, device, threads=1)
    pure_s = overlapped_s = 0.0
    faces = 0
    for name in frames.names():
        index = np.flatnonzero(frames.face_present(name))
        if faces >= max_faces or not len(index):
            continue
        decoded = [to_model_input(frames.read(name, index[i: i + batch_size])).numpy()
                   for i in range(0, len(index), batch_size)]
        if not faces:
            session.run(None, {"image": decoded[0]})  # warm-up
        start = time.perf_counter()
        for batch in decoded:
            session.run(None, {"image": batch})
        pure_s += time.perf_counter() - start
        start = time.perf_counter()
        run_visual(embedder, frames, name, index, batch_size)
        overlapped_s += time.perf_counter() - start
        faces += len(index)
    return {"faces": faces, "pure_faces_per_s": faces / pure_s, "decode_ahead_faces_per_s": faces / overlapped_s,
            "decode_ahead_vs_pure": pure_s / overlapped_s}


def store_sizes(path: Path) -> dict[str, Any]:
    """On-disk bytes of a store per frame, in total and per array name."""
    store = EmbeddingStore.open_read(path)
    frames = sum(int(store.entry_attrs(key)["n_frames"]) for key in store.keys())
    per_array: dict[str, int] = {}
    for key in store.keys():
        for array_dir in (path / key).iterdir():
            if array_dir.is_dir():
                size = sum(f.stat().st_size for f in array_dir.rglob("*") if f.is_file())
                per_array[array_dir.name] = per_array.get(array_dir.name, 0) + size
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "frames": frames, "bytes": total, "bytes_per_frame": total / frames,
        "bytes_per_frame_by_array": {name: size / frames for name, size in sorted(per_array.items())},
    }


def read_back(path: Path) -> dict[str, Any]:
    """Rate of reading every whole entry (all arrays) into memory."""
    store = EmbeddingStore.open_read(path)
    frames = nbytes = 0
    start = time.perf_counter()
    for key in store.keys():
        arrays = store.read(key)
        frames += len(next(iter(arrays.values())))
        nbytes += sum(a.nbytes for a in arrays.values())
    seconds = time.perf_counter() - start
    return {"entries": len(store.keys()), "frames_per_s": frames / seconds, "mb_per_s": nbytes / seconds / 1e6}


def layout_read_back(path: Path, entries: int, frames: int, seed: int) -> dict[str, Any]:
    """Write and read back ``entries`` visual-layout entries of ``frames`` frames (random values).

    The synthetic videos are a few seconds long, so per-array open costs dominate their read-back;
    this measures entries of the length of an average Aff-Wild2 video instead.
    """
    rng = np.random.default_rng(seed)
    store = EmbeddingStore.open_for_write(path, "0" * 64, {"model": "layout", "params": {}, "dim": 512},
                                          chunk_frames=EmbedVisualConfig().chunk_frames)
    arrays = {
        "embedding": rng.normal(size=(frames, 512)).astype(np.float16),
        "au_logits": rng.normal(size=(frames, 12)).astype(np.float32),
        "expr_logits": rng.normal(size=(frames, 7)).astype(np.float32),
        "face_present": np.ones(frames, bool), "au": rng.integers(-1, 2, (frames, 12)).astype(np.int8),
        "expr": rng.integers(-1, 7, frames).astype(np.int8),
    }
    start = time.perf_counter()
    for k in range(entries):
        store.write(f"video{k}", arrays, {"n_frames": frames})
    write_s = time.perf_counter() - start
    return {"frames_per_entry": frames, "write_frames_per_s": entries * frames / write_s, **read_back(path)}


def main() -> None:
    parser = harness.parser("embed_visual", __doc__, full_doc=True)
    parser.add_argument("--prepared", type=Path, help="an existing prepare output (with --frames)")
    parser.add_argument("--frames", type=Path, help="its frames.h5")
    parser.add_argument("--onnx", type=Path, help="an exported visual.onnx instead of a random backbone")
    parser.add_argument("--backbone", default="iresnet18")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--copies", type=int, default=1, help="times each synthetic subject is embedded")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-pure-faces", type=int, default=256, help="faces pre-decoded for the pure rate")
    parser.add_argument("--max-interleaved-faces", type=int, default=512, help="faces of the interleaved comparison")
    parser.add_argument("--entry-frames", type=int, default=5100, help="frames per entry of the layout read-back")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bench = harness.start("embed_visual")
    if (args.prepared is None) != (args.frames is None):
        parser.error("--prepared and --frames go together")

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        base = Path(tmp)
        if args.prepared:
            videos_prepared, prepared, frames = args.prepared, args.prepared, args.frames
        else:
            videos_prepared, prepared, frames = build_inputs(base, args.copies, args.seed)
        onnx = args.onnx or export_backbone(base / "visual.onnx", args.backbone, args.width_mult, args.seed)
        inference = InferenceOptions(device=args.device, batch_size=args.batch_size)
        cluster = ClusterOptions(n_workers=args.workers, threads_per_worker=args.threads)

        # the pure rate is measured before and after, as the machine's load may change meanwhile
        pure_before = pure_rate(onnx, frames, args.device, args.batch_size, args.max_pure_faces)
        start = time.perf_counter()
        report = embed_visual(prepared, frames, onnx, base / "visual.zarr", EmbedVisualConfig(), inference, cluster,
                              work_dir=base / "work", progress=False)
        wall = time.perf_counter() - start
        if not report.ok:
            raise SystemExit(report.summary())
        pure_after = pure_rate(onnx, frames, args.device, args.batch_size, args.max_pure_faces)
        pure = (pure_before["faces_per_s"] + pure_after["faces_per_s"]) / 2
        interleaved = interleaved_rates(onnx, frames, args.device, args.batch_size, args.max_interleaved_faces)
        faces = sum(r["faces"] for r in report.results.values())
        task_s = sum(r["seconds"] for r in report.results.values())
        model_s = sum(r["model_seconds"] for r in report.results.values())
        wait_s = sum(r["decode_wait_seconds"] for r in report.results.values())

        audio = embed_audio(videos_prepared, export_tdnn(base / "audio", args.seed), base / "audio.zarr",
                            EmbedAudioConfig(), inference, cluster, work_dir=base / "work", progress=False)
        if not audio.ok:
            raise SystemExit(audio.summary())

        result = {
            "device": args.device, "providers": pure_before["providers"],
            "backbone": "given" if args.onnx else f"{args.backbone} x{args.width_mult}",
            "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads,
            "subjects": len(report.computed), "faces": faces,
            "pure_faces_per_s": pure, "pure_faces_per_s_before_after": [pure_before["faces_per_s"], pure_after["faces_per_s"]],
            "interleaved": interleaved,
            "task_faces_per_s": faces / task_s, "task_vs_pure": faces / task_s / pure,
            "task_model_only_faces_per_s": faces / model_s,
            "wall_faces_per_s": faces / wall, "wall_seconds": wall,
            "task_model_share": model_s / task_s, "task_decode_wait_share": wait_s / task_s,
            "visual_store": store_sizes(base / "visual.zarr"), "audio_store": store_sizes(base / "audio.zarr"),
            "visual_read_back": read_back(base / "visual.zarr"), "audio_read_back": read_back(base / "audio.zarr"),
            "layout_read_back": layout_read_back(base / "layout.zarr", 4, args.entry_frames, args.seed),
        }
    bench.publish(result, args.threads, args.out)


if __name__ == "__main__":
    main()
