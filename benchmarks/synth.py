"""Synthetic dataset: generation time and size per preset, and how often a face detector finds the faces.

Generates a preset into a scratch directory (wall and process CPU time, bytes by kind, per-frame
cost), then runs the ``predict`` stage's frame detector (scikit-image LBP cascade) on every
``--detect-every``-th frame of each video and reports the share of faces found. Prints one JSON object.

    python -m benchmarks.synth --preset tiny
    python -m benchmarks.synth --preset demo --workers 2 --detect-every 10
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.data.synth.plan import plan_videos
from pipeline.data.video import decode_frames
from pipeline.fsio import scratch_dir
from tooling.bench import harness


def _bytes(root: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file())


def _detection_rate(root: Path, cfg: SynthConfig, every: int) -> float:
    from pipeline.faces.detect import DetectorConfig, FaceDetector

    detector = FaceDetector(DetectorConfig())
    found = total = 0
    for plan in plan_videos(cfg):
        for i, (_, _, image) in enumerate(decode_frames(root / plan.relpath)):
            if i % every:
                continue
            faces = detector.detect(image)
            found += min(len(faces), len(plan.subjects))
            total += len(plan.subjects)
    return found / max(total, 1)


def main() -> None:
    parser = harness.parser("synth", __doc__)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "demo"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--detect-every", type=int, default=5, help="0 skips the detector check")
    args = parser.parse_args()
    bench = harness.start("synth")

    cfg = SynthConfig.from_preset(args.preset, seed=args.seed)
    scratch = scratch_dir("mmaffect-synth-bench-")
    try:
        root = scratch / "data"
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate_dataset(root, cfg, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result = {
            "preset": args.preset, "workers": args.workers, "seconds_wall": round(wall, 2),
            "seconds_cpu_main_process": round(cpu, 2),
            "ms_per_frame_wall": round(1000 * wall / (summary["frames"] + summary["bp4d_frames"]), 2),
            **summary,
            "bytes_videos": _bytes(root / "videos", "*"), "bytes_crops": _bytes(root / "cropped_aligned", "*.jpg"),
            "bytes_bp4d": _bytes(root / "BP4D", "*"),
        }
        if args.detect_every > 0:
            result["detector_face_rate"] = round(_detection_rate(root, cfg, args.detect_every), 3)
        bench.publish(result, args.workers, args.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
