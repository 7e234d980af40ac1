"""Synthetic face-identity set: time to render and write both layouts, and the bytes written.

Generates ``--identities`` x ``--images`` into a scratch directory, times it (wall and this process's
CPU), and extrapolates linearly to ``--target`` identities (default: the demo size, 1,000 x 12
images): every image costs the same, being drawn from its own seed. Prints the JSON record and
writes it to ``--out`` (default ``benchmarks/results/face_identities.json``, or
``face_identities_workers2.json`` with ``--workers 2``; rendered into docs/pretrain.md).

    python -m benchmarks.face_identities --identities 50 --images 12
    python -m benchmarks.face_identities --identities 50 --images 12 --workers 2
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities
from pipeline.fsio import scratch_dir
from tooling.bench import harness
from tooling.bench.record import RESULTS_DIR


def main() -> None:
    parser = harness.parser("face_identities", __doc__, out=False)
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--target", type=int, default=1000, help="identities to extrapolate to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON record is written "
                        "(default: benchmarks/results/face_identities[_workersN].json)")
    args = parser.parse_args()
    suffix = "" if args.workers == 1 else f"_workers{args.workers}"
    out = args.out or RESULTS_DIR / f"face_identities{suffix}.json"
    bench = harness.start("face_identities")
    cfg = FaceIdentityConfig(identities=args.identities, images_per_identity=args.images, seed=args.seed)
    scratch = scratch_dir("mmaffect-faces-bench-")
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate_face_identities(scratch / "faces", cfg, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        folder_bytes = sum(p.stat().st_size for p in (scratch / "faces" / "folder").rglob("*.jpg"))
        per_image = wall / summary["images"]
        scale = args.target / args.identities
        bench.publish({
            **summary, "images_per_identity": args.images, "workers": args.workers, "seconds_wall": round(wall, 2),
            "seconds_cpu": round(cpu, 2), "ms_per_image_wall": round(1000 * per_image, 2),
            "bytes_folder": folder_bytes, "target_identities": args.target,
            "target_seconds_wall_extrapolated": round(wall * scale, 1),
            "target_bytes_rec_extrapolated": int(summary["bytes_rec"] * scale),
        }, threads=args.workers, out=out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
