"""Face found per frame in real-photograph videos at common sizes, stored upright or with a display matrix; prints JSON.

For each viewed size (854x480, 640x360, portrait 480x854) and display rotation (none, -90, 90, 180:
the pictures stored turned the other way, as a phone stores them), each photograph shipped with an
installed package moves as in ``benchmarks/face_alignment.py`` with its face a quarter of the frame's
height (:func:`pipeline.faces.moving_photos.write_moving_photo_video`). Two counts per video:

- ``found``: frames where the detector finds the face in ``decode_frames``' frames (upright,
  contiguous: what ``predict`` and ``crop`` search);
- ``found_as_stored``: the same detector on PyAV's own array of the stored picture (padded rows, not
  turned), as frames were searched before ``decode_frames`` made them so.

    python -m benchmarks.face_orientation --frames 40
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av

from pipeline.data.video import decode_frames
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, grace_hopper, located_faces, write_moving_photo_video
from pipeline.fsio import scratch_dir
from tooling.bench import harness

SIZES = ((854, 480), (640, 360), (480, 854))
ROTATIONS = (0, -90, 90, 180)


def _found_as_stored(detector: FaceDetector, video: Path) -> int:
    """Frames where the face is found in PyAV's array as it comes (the detector's own copy skipped)."""
    found = 0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            raw = frame.to_ndarray(format="rgb24")
            scale = detector.search_scale(raw.shape[0])
            if scale == 1.0:   # searched at full size: dlib is handed the array itself, as before
                found += bool(detector._hog.run(raw, 0, detector.config.min_score)[0])
            else:              # searched downscaled: the resize always made a packed copy
                found += bool(detector.detect(raw))
    return found


def main() -> None:
    parser = harness.parser("face_orientation", __doc__)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    bench = harness.start("face_orientation")
    detector = FaceDetector(DetectorConfig())
    photos = dict(zip(("astronaut", "grace_hopper"), located_faces([astronaut(), grace_hopper()])))
    rows = []
    scratch = scratch_dir("mmaffect-face-orientation-")
    try:
        for width, height in SIZES:
            for rotation in ROTATIONS:
                for name, located in photos.items():
                    video, _ = write_moving_photo_video(scratch / f"{name}.mp4", located, (width, height),
                                                        args.frames, display_rotation=rotation)
                    found = sum(bool(detector.detect(image)) for _, _, image in decode_frames(video))
                    rows.append({"size": f"{width}x{height}", "display_rotation": rotation, "photo": name,
                                 "frames": args.frames, "found": found,
                                 "found_as_stored": _found_as_stored(detector, video)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = sum(row["frames"] for row in rows)
    results = {
        "frames_per_video": args.frames, "face_share_of_height": 0.25, "max_angle": 15.0, "videos": rows,
        "found_share": round(sum(row["found"] for row in rows) / total, 4),
        "found_share_min": round(min(row["found"] / row["frames"] for row in rows), 4),
        "found_as_stored_share": round(sum(row["found_as_stored"] for row in rows) / total, 4),
    }
    bench.publish(results, harness.env_threads(), args.out)


if __name__ == "__main__":
    main()
