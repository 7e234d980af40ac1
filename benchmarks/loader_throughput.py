"""How many DataLoader workers feed a GPU: JPEG decode and augmentation images/s from a frame store.

The visual trainer's batches are read from ``frames.h5`` and JPEG-decoded by the DataLoader (in its
worker processes when ``finetune-visual --workers`` > 0), then augmented and normalised on the
training device. For each worker count this measures, over the same seeded face frames:

- ``decode_images_per_s``: batches out of the DataLoader (HDF5 read + JPEG decode + collate);
- ``fed_images_per_s``: the same, then augmentation and normalisation on ``--device`` (what a
  training step receives);

and once, ``augment_images_per_s``: augmentation + normalisation alone on ``--device``. The first
batch of every loader (worker start-up) is not timed. ``per_worker_decode_images_per_s`` is the best
``decode_images_per_s / workers``, and ``workers_needed`` turns it into the workers that decode as
fast as a GPU trains at each of ``--train-rates`` images/s (workers only help while there are free
cores: on a machine with few cores the rate stops growing with workers, which the table shows).

    python -m benchmarks.loader_throughput --frames cache/frames/frames.h5 --workers 0,1,2 --batch 64 --batches 30

Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.storage.frame_store import FrameStore
from pipeline.device import resolve_device
from pipeline.labels import NUM_AUS
from pipeline.models.preprocess import to_model_input
from pipeline.train.augment import AugmentConfig, augment_batch
from pipeline.train.frames_dataset import FrameDataset, FrameSet
from pipeline.train.loader import LoaderConfig
from tooling.bench import harness


def face_frames(path: Path, n: int, seed: int) -> FrameSet:
    """``n`` frames with a face drawn (seeded, without replacement) from the store, labels unset."""
    store = FrameStore(path)
    names = tuple(store.names())
    subject, frame = [], []
    for s, name in enumerate(names):
        present = np.flatnonzero(store.face_present(name))
        subject.append(np.full(len(present), s, np.int32))
        frame.append(present)
    store.close()
    subjects, frames = np.concatenate(subject), np.concatenate(frame).astype(np.int64)
    if len(frames) == 0:
        raise ValueError(f"{path}: the frame store holds no face crop")
    pick = np.random.default_rng(seed).choice(len(frames), size=min(n, len(frames)), replace=False)
    return FrameSet(names, subjects[pick], frames[pick], np.full((len(pick), NUM_AUS), -1, np.int8),
                    np.full(len(pick), -1, np.int8))


def loader_rates(dataset: FrameDataset, batches: list[list[int]], workers: int, prefetch: int | None,
                 device: torch.device, augment: AugmentConfig) -> dict[str, float]:
    """Decode-only and decode+augment images/s with ``workers`` DataLoader processes."""
    kwargs = LoaderConfig(workers=workers, prefetch_factor=prefetch if workers else None).dataloader_kwargs(device)
    generator = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(prepare: bool) -> float:
        loader = iter(DataLoader(dataset, batch_sampler=batches, **kwargs))
        next(loader)  # worker start-up and the first batch are not timed
        images, began = 0, time.perf_counter()
        for batch, _, _ in loader:
            if prepare:
                to_model_input(augment_batch(batch.to(device, non_blocking=True), augment, generator))
            images += len(batch)
        sync()
        return images / (time.perf_counter() - began)

    return {"decode_images_per_s": round(run(False), 1), "fed_images_per_s": round(run(True), 1)}


def augment_rate(dataset: FrameDataset, batches: list[list[int]], device: torch.device, augment: AugmentConfig,
                 rounds: int) -> float:
    """Augmentation + normalisation images/s on ``device`` over already-decoded batches."""
    decoded = [torch.stack([item[0] for item in dataset.__getitems__(b)]).to(device) for b in batches[:4]]
    generator = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    to_model_input(augment_batch(decoded[0], augment, generator))  # warm-up
    sync()
    began = time.perf_counter()
    for r in range(rounds):
        to_model_input(augment_batch(decoded[r % len(decoded)], augment, generator))
    sync()
    return len(decoded[0]) * rounds / (time.perf_counter() - began)


def measure(frames: Path, workers: list[int], batch: int, n_batches: int, device: torch.device,
            prefetch: int | None, train_rates: list[float], seed: int = 0) -> dict:
    """The benchmark's figures (see the module docstring)."""
    frame_set = face_frames(frames, batch * n_batches, seed)
    dataset = FrameDataset(frames, frame_set)
    order = np.arange(len(frame_set))
    batches = [order[i:i + batch].tolist() for i in range(0, len(order) - batch + 1, batch)]
    if len(batches) < 2:
        raise ValueError(f"{frames}: {len(frame_set)} face crops make fewer than 2 batches of {batch}")
    augment = AugmentConfig()
    per_workers = {str(w): loader_rates(dataset, batches, w, prefetch, device, augment) for w in workers}
    per_worker = round(max((r["decode_images_per_s"] / int(w) for w, r in per_workers.items() if int(w) > 0),
                           default=per_workers[str(min(workers))]["decode_images_per_s"]), 1)
    return {
        "frames": str(frames),
        "device": str(device),
        "batch": batch,
        "batches_timed": len(batches) - 1,
        "prefetch_factor": prefetch,
        "augment": dataclasses.asdict(augment),
        "workers": per_workers,
        "augment_images_per_s": round(augment_rate(dataset, batches, device, augment, rounds=len(batches)), 1),
        "per_worker_decode_images_per_s": per_worker,
        "workers_needed": {f"{rate:g}": math.ceil(rate / per_worker) for rate in train_rates},
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse the options, measure, write and print the record."""
    parser = harness.parser("loader_throughput", __doc__)
    parser.add_argument("--frames", type=Path, default=Path("cache/frames/frames.h5"), help="a pack-frames store")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="batches timed per loader (after one untimed)")
    parser.add_argument("--prefetch-factor", type=int, default=None, help="batches per worker ahead (torch: 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where augmentation runs")
    parser.add_argument("--train-rates", default="500,1000,2000,4000",
                        help="training images/s to size workers for (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args(argv)
    bench = harness.start("loader_throughput", argv)
    torch.set_num_threads(args.threads)
    results = measure(args.frames, [int(w) for w in args.workers.split(",")], args.batch, args.batches + 1,
                      resolve_device(args.device), args.prefetch_factor,
                      [float(r) for r in args.train_rates.split(",")])
    return bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
