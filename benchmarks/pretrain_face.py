"""Time of the demo's ``synth-faces`` + ``pretrain-face``, from timed pieces extrapolated to the params.

Generates a small identity set (``--identities`` x the params' images per identity, ``--workers``
processes), then times, on it, ``--batches`` training steps of the params' backbone, width, margin
head and batch size (image decoding, flips, forward, backward, SGD step) and the embedding of held-out
images as the verification does it. Wall and process CPU seconds are both reported: on a busy
machine the wall time is inflated by other processes, and the CPU time / threads is the figure to
extrapolate an idle machine from. The extrapolation multiplies the per-image and per-batch figures
by the params' counts (``synth_faces``: identities x images; ``pretrain_face``: epochs x batches of
``images_per_epoch``, and one verification pass per epoch plus the initial one).
Prints the JSON record and writes it to ``--out`` (default ``benchmarks/results/pretrain_face.json``).

    python -m benchmarks.pretrain_face --params params.yaml
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import from_dict, load_section
from pipeline.data.faces.sets import open_face_set
from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities
from pipeline.train.ddp import DistContext
from pipeline.train.face_data import FaceImages
from pipeline.train.loop_state import LoopState
from pipeline.train.pretrain import PretrainConfig, PretrainRun, embed_images, epoch_batches
from tooling.bench import harness


def _timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the record."""
    parser = harness.parser("pretrain_face", __doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--identities", type=int, default=100, help="identities generated and timed on")
    parser.add_argument("--batches", type=int, default=8, help="training steps timed (after one warm-up step)")
    parser.add_argument("--workers", type=int, default=2, help="synth-faces worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = harness.start("pretrain_face", argv)
    demo_faces = from_dict(FaceIdentityConfig, load_section(args.params, "synth_faces"))
    cfg = from_dict(PretrainConfig, load_section(args.params, "pretrain_face"))
    small = FaceIdentityConfig(identities=args.identities, images_per_identity=demo_faces.images_per_identity)
    with tempfile.TemporaryDirectory() as tmp:
        gen_wall, _ = _timed(lambda: generate_face_identities(Path(tmp) / "faces", small, workers=args.workers))
        faces = open_face_set(Path(tmp) / "faces" / "rec")
        labels = faces.labels
        run = PretrainRun(cfg, int(labels.max()) + 1, torch.device("cpu"), DistContext(), total_steps=1000)
        dataset = FaceImages(faces, np.arange(len(faces)), labels)
        batches = epoch_batches(len(faces), 0, cfg, 2)[:args.batches + 1]
        loop = LoopState(Path(tmp) / "state.pt", {}, writer=False)
        run.train_epoch(loop, 0, batches[:1], dataset, 0, False)   # warm-up
        loop.batch = 0
        train_wall, train_cpu = _timed(lambda: run.train_epoch(loop, 0, batches[1:], dataset, 0, False))
        steps = len(batches) - 1
        embed_wall, embed_cpu = _timed(lambda: embed_images(run.model.backbone, dataset, cfg.batch_size,
                                                            torch.device("cpu"), DistContext()))
    images = demo_faces.identities * demo_faces.images_per_identity
    held = round(cfg.holdout_share * demo_faces.identities) * demo_faces.images_per_identity
    per_epoch = min(cfg.images_per_epoch or images - held, images - held) // cfg.batch_size
    per_batch_cpu, per_image_embed_cpu = train_cpu / steps, embed_cpu / len(dataset)
    idle_train = cfg.epochs * per_epoch * per_batch_cpu / args.threads
    idle_verify = (cfg.epochs + 1) * held * per_image_embed_cpu / args.threads
    results = {
        "params": {"backbone": cfg.backbone, "width_mult": cfg.width_mult, "batch_size": cfg.batch_size,
                   "epochs": cfg.epochs, "images_per_epoch": cfg.images_per_epoch, "margin": cfg.margin,
                   "identities": demo_faces.identities, "images_per_identity": demo_faces.images_per_identity},
        "generation_ms_per_image_wall": round(1000 * gen_wall / len(dataset), 2),
        "train_batches_timed": steps,
        "train_s_per_batch_wall": round(train_wall / steps, 3),
        "train_s_per_batch_cpu": round(per_batch_cpu, 3),
        "embed_ms_per_image_wall": round(1000 * embed_wall / len(dataset), 2),
        "embed_ms_per_image_cpu": round(1000 * per_image_embed_cpu, 2),
        "demo_batches": cfg.epochs * per_epoch,
        "demo_verification_images": (cfg.epochs + 1) * held,
        "extrapolated_generation_s_wall": round(gen_wall / len(dataset) * images, 1),
        "extrapolated_train_s_cpu_per_thread": round(idle_train, 1),
        "extrapolated_verification_s_cpu_per_thread": round(idle_verify, 1),
    }
    return bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
