"""Frame store size and speed: source JPEG bytes vs store bytes, pack rate, random-read rate.

Without ``--prepared`` it builds a crop set in a temporary folder (``--subjects`` x ``--frames``
112x112 face-like JPEGs of about the size of Aff-Wild2's crops, a few missing); with
``--prepared DIR`` it packs the subjects of an existing ``prepare`` output. Prints one JSON object.

    python -m benchmarks.pack_frames --subjects 20 --frames 1000
    python -m benchmarks.pack_frames --prepared cache/prepared
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.storage.frame_store import FrameStore
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.manifest import Manifest, SubjectRecord, read_manifest
from tooling.bench import harness


def make_crops(root: Path, subjects: int, frames: int, seed: int = 0) -> Manifest:
    """Write ``subjects`` folders of ``frames`` JPEG crops (2% missing) and return their manifest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    records = []
    for s in range(subjects):
        crops = root / f"subject{s:03d}"
        crops.mkdir(parents=True)
        tone = rng.uniform(90, 200, size=3)
        for i in range(frames):
            if rng.random() < 0.02:
                continue
            # a shaded oval face with texture and sensor noise compresses like a real crop (~4-6 KB)
            face = np.exp(-(((xx - 56) / 40) ** 2 + ((yy - 60) / 50) ** 2))
            texture = 12 * np.sin(xx / (3 + s % 5) + i / 7) * np.cos(yy / 5)
            image = tone[None, None, :] * face[..., None] + texture[..., None] + rng.normal(0, 6, (112, 112, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(crops / f"{i + 1:05d}.jpg", quality=92)
        records.append(SubjectRecord(name=crops.name, video=crops.name, crops_dir=str(crops), n_frames=frames))
    return Manifest(root=str(root), subjects=tuple(records))


def read_rate(path: Path, manifest: Manifest, batches: int, batch: int, seed: int = 1) -> float:
    """Frames per second of random reads: a random subject, ``batch`` random frames, decoded."""
    rng = np.random.default_rng(seed)
    store = FrameStore(path)
    names = [r.name for r in manifest.subjects if r.n_frames > 0]
    started = time.perf_counter()
    for _ in range(batches):
        name = names[int(rng.integers(len(names)))]
        store.read(name, rng.integers(0, store.n_frames(name), size=batch))
    return batches * batch / (time.perf_counter() - started)


def main() -> None:
    parser = harness.parser("pack_frames", __doc__, full_doc=True)
    parser.add_argument("--prepared", type=Path, help="a prepare output folder to pack instead of generated crops")
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--verify", default="decode", choices=["decode", "header", "none"])
    parser.add_argument("--read-batches", type=int, default=200)
    parser.add_argument("--read-batch", type=int, default=64)
    args = parser.parse_args()
    bench = harness.start("pack_frames")
    with tempfile.TemporaryDirectory(prefix="pack-bench-") as tmp:
        tmp_path = Path(tmp)
        if args.prepared:
            manifest = read_manifest(args.prepared / "manifest.json")
            source = str(args.prepared)
        else:
            started = time.perf_counter()
            manifest = make_crops(tmp_path / "crops", args.subjects, args.frames)
            source = f"generated {args.subjects} x {args.frames} crops in {time.perf_counter() - started:.1f} s"
        out = tmp_path / "frames.h5"
        stats = pack_frames(manifest, out, PackConfig(verify=args.verify), workers=args.workers)
        result = {
            "source": source,
            "subjects": stats["subjects"],
            "frames": stats["frames"],
            "faces": stats["faces"],
            "source_jpeg_bytes": stats["source_bytes"],
            "mean_jpeg_bytes": stats["source_bytes"] / max(1, stats["faces"]),
            "store_bytes": stats["store_bytes"],
            "ratio": stats["ratio"],
            "pack_seconds": stats["seconds"],
            "pack_frames_per_s": stats["frames_per_s"],
            "pack_workers": args.workers,
            "verify": args.verify,
            "random_read_frames_per_s": read_rate(out, manifest, args.read_batches, args.read_batch),
            "random_read_batch": args.read_batch,
        }
    bench.publish(result, args.workers, args.out)


if __name__ == "__main__":
    main()
