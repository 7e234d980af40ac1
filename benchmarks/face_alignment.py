"""Face found and aligned on videos of real photographs moving by known transforms; prints JSON.

For each photograph shipped with an installed package (scikit-image's astronaut, matplotlib's Grace
Hopper): frames where the face was found, and the per-frame alignment error in 112x112 crop pixels
(:mod:`pipeline.faces.measure`), as ``tests/unit/faces/test_face_detect.py`` checks them.

    python -m benchmarks.face_alignment
"""

from __future__ import annotations


import numpy as np

from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.measure import alignment_errors
from pipeline.faces.moving_photos import astronaut, grace_hopper
from tooling.bench import harness


def main() -> None:
    parser = harness.parser("face_alignment", __doc__)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--max-angle", type=float, default=30.0)
    args = parser.parse_args()
    bench = harness.start("face_alignment")
    detector = FaceDetector(DetectorConfig())
    results = {"frames": args.frames, "max_angle": args.max_angle, "face_px": [100, 130], "frame_size": [240, 320]}
    for name, photo in (("astronaut", astronaut), ("grace_hopper", grace_hopper)):
        r = alignment_errors(detector, photo(), n_frames=args.frames, max_angle=args.max_angle)
        results[name] = {
            "found": r.found, "median_error_px": round(float(np.median(r.errors_px)), 2),
            "max_error_px": round(float(r.errors_px.max()), 2), "within_3px": int((r.errors_px <= 3.0).sum()),
            "template_residual_px": round(r.template_residual_px, 2),
        }
    bench.publish(results, harness.env_threads(), args.out)


if __name__ == "__main__":
    main()
