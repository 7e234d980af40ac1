"""Throughput and recall of the face detection and tracking used by ``mmaffect predict`` and ``crop``; prints JSON.

Frames are a real photograph (``skimage.data.astronaut()``) turning up to 30 degrees, zooming and
shifting (:func:`pipeline.faces.moving_photos.moving_photo`), 320x240 by default. Compares dlib
detection with five landmarks on every frame with the tracker (detection every ``detect_every``
frames, landmarks re-fitted between), and reports how many frames had the face.

    OMP_NUM_THREADS=1 python -m benchmarks.face_tracking --frames 60
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, moving_photo
from pipeline.faces.track import FaceTracker, TrackerConfig
from tooling.bench import harness


def main() -> None:
    parser = harness.parser("face_tracking", __doc__)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--detect-every", type=int, default=TrackerConfig().detect_every)
    args = parser.parse_args()
    bench = harness.start("face_tracking")
    detector = FaceDetector(DetectorConfig())
    photo = astronaut()
    face = detector.detect(photo)[0]
    zoom = args.height / 2.4 / face.box.w   # the face about 40 % of the frame's height
    frames, _ = moving_photo(photo, tuple(face.landmarks.mean(axis=0)), n_frames=args.frames,
                             size=(args.width, args.height), zoom=(zoom, 1.3 * zoom), max_shift=args.height / 8)

    start = time.perf_counter()
    full_found = sum(bool(detector.detect(frame)) for frame in frames)
    full_s = time.perf_counter() - start

    tracker = FaceTracker(TrackerConfig(detect_every=args.detect_every), detector)
    start = time.perf_counter()
    tracked = [tracker.update(frame) for frame in frames]
    tracked_s = time.perf_counter() - start
    results = {
        "frames": args.frames,
        "frame_size": [args.height, args.width],
        "detect_every": args.detect_every,
        "full_search_fps": round(args.frames / full_s, 2),
        "full_search_frames_with_face": int(full_found),
        "tracker_fps": round(args.frames / tracked_s, 2),
        "tracker_frames_with_face": int(sum(bool(faces) for faces in tracked)),
        "speedup": round(full_s / tracked_s, 2),
        "tracked_face_side_px": round(float(np.mean([faces[0].box.w for faces in tracked if faces])), 1),
    }
    bench.publish(results, harness.env_threads(), args.out)


if __name__ == "__main__":
    main()
