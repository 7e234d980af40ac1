"""What each ``prepare.frame_count`` mode costs per hour of video: CPU seconds of ``probe_video``.

Writes one synthetic video with the generator's writer (H.264 + 44.1 kHz AAC, or ``--video`` to time
an existing file), probes it ``--repeats`` times in each mode and keeps the fastest CPU time (process
time, which a loaded machine distorts less than wall time). Prints the JSON record and writes it to
``--out`` (default ``benchmarks/results/probe_video.json``, rendered into docs/data.md).

    python -m benchmarks.probe_video --seconds 120
    python -m benchmarks.probe_video --video data/synthetic/videos/batch1/video1.mp4
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.data.synth.media import VideoWriter
from pipeline.data.video import FRAME_COUNT_MODES, probe_video
from tooling.bench import harness


def write_video(path: Path, seconds: float, fps: float = 30.0, size: int = 128, sample_rate: int = 44100) -> Path:
    """Write a ``seconds`` long video: a moving ramp and noise audio over the whole picture."""
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * sample_rate)).astype(np.float32)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    with VideoWriter(path, fps, (size, size), audio, sample_rate) as writer:
        for i in range(int(seconds * fps)):
            writer.write(((ramp[None, :, None] + 3 * i) % 256 * np.ones((size, 1, 3), np.float32)).astype(np.uint8))
    return path


def time_modes(path: Path, repeats: int) -> dict[str, float]:
    """Fastest process time (s) of ``probe_video`` per mode."""
    out = {}
    for mode in FRAME_COUNT_MODES:
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            probe_video(path, mode)
            best = min(best, time.process_time() - start)
        out[mode] = best
    return out


def main() -> None:
    """Parse the options, time the modes, print and write the JSON record."""
    parser = harness.parser("probe_video", __doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the synthetic video")
    parser.add_argument("--video", type=Path, default=None, help="time this file instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = harness.start("probe_video")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.video or write_video(Path(tmp) / "probe.mp4", args.seconds)
        info = probe_video(path)
        cpu = time_modes(path, args.repeats)
        hours = info.duration_s / 3600
        results = {
            "video": str(args.video or "synthetic"), "frames": info.n_frames, "seconds": round(info.duration_s, 2),
            "bytes": path.stat().st_size, "repeats": args.repeats, "cpu_s": {m: round(t, 4) for m, t in cpu.items()},
            "cpu_s_per_video_hour": {m: round(t / hours, 2) for m, t in cpu.items()},
        }
    # One process and one Python thread; CPU time counts any decoder threads FFmpeg adds, so it is the cost.
    bench.publish(results, threads=1, out=args.out)


if __name__ == "__main__":
    main()
