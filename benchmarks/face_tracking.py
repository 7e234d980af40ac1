"""Throughput of the offline face detector used by ``mmaffect predict`` on raw videos; prints JSON.

Frames are a 512x512 photograph of a real face (``skimage.data.astronaut()``) panned 2 px per frame.
Compares a full-frame search on every frame with the tracker (local search around the last face,
full search every ``redetect_every`` frames), and reports how many frames kept the face.

    OMP_NUM_THREADS=1 python benchmarks/face_tracking.py --frames 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data

from pipeline.predict.faces import DetectorConfig, FaceDetector, FaceTracker
from pipeline.predict.photo_video import panned_frames
from pipeline.report.record import RESULTS_DIR, benchmark_record, load_average, write_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--max-side", type=int, default=DetectorConfig().max_side)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "face_tracking.json", help="where the JSON record is written")
    args = parser.parse_args()
    load_before = load_average()
    config = DetectorConfig(max_side=args.max_side)
    frames = panned_frames(skimage.data.astronaut(), args.frames, shift=2)
    detector = FaceDetector(config)

    start = time.perf_counter()
    full_found = sum(bool(detector.detect(frame)) for frame in frames)
    full_s = time.perf_counter() - start

    tracker = FaceTracker(config, detector)
    start = time.perf_counter()
    boxes = [tracker.update(frame) for frame in frames]
    tracked_s = time.perf_counter() - start
    results = {
        "frames": args.frames,
        "frame_size": list(frames.shape[1:3]),
        "max_side": args.max_side,
        "full_search_fps": round(args.frames / full_s, 2),
        "full_search_frames_with_face": int(full_found),
        "tracker_fps": round(args.frames / tracked_s, 2),
        "tracker_frames_with_face": int(sum(box is not None for box in boxes)),
        "speedup": round(full_s / tracked_s, 2),
        "tracked_face_side_px": round(float(np.mean([b.w for b in boxes if b is not None])), 1),
    }
    record = benchmark_record("face_tracking", results, sys.argv, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)), load_before)
    write_record(record, args.out)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
