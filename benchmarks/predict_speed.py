"""Frames/s of each part of ``mmaffect predict`` on real-face 720p and 1080p videos, and its peak memory on 4K; prints JSON.

The videos are a real photograph (scikit-image's astronaut) turning by up to ``--max-angle`` degrees,
zooming and shifting (:func:`pipeline.faces.moving_photos.moving_photo_matrices`), its face about a
quarter of the frame's height, at 30 fps with a tone soundtrack. On each, with the given exported
models and ``--threads`` onnxruntime threads:

* ``parts``: the predict path run part by part through the library's own functions, each timed:
  ``decode`` (PyAV to RGB), ``detection`` (time inside :meth:`FaceDetector.detect`: the HOG search and
  the landmarks of the faces it finds), ``landmarks_alignment`` (the rest of :meth:`FaceTracker.update`:
  following faces by their landmarks, aligning crops, associating ids), ``embedding`` (``visual.onnx``
  on batches), ``audio`` (decoding, log-mel and ``tdnn.onnx``) and ``sequence`` (``sequence.onnx``);
  each as frames/s of the video and as its share of the summed time, and as ``cpu_fps``: frames per
  second of CPU time of the calling thread, which a loaded machine changes little (for the parts
  dlib runs in the calling thread, the idle-machine rate; for decoding, which FFmpeg spreads over
  threads, and the onnxruntime parts an upper bound, their other threads' work is not counted);
* ``end_to_end``: :func:`~pipeline.predict.video.predict_video` with the default settings and with
  ``--baseline`` settings (a full-resolution search every 5 frames, as before the search was
  downscaled), run in alternating rounds so the ratio survives a shared machine's load; the median
  frames/s of each and their ratio, by wall time and by the process's CPU time (all its threads:
  on 2 idle cores the wall rate lies between ``cpu_fps`` and twice it);
* ``frames_with_face`` of the default settings (the face is in every frame).

On a 4K video (``--memory-frames`` N and 3N frames) the peak resident memory of a fresh process running
``predict_video`` on it, to show it does not grow with the video's length.

    OMP_NUM_THREADS=2 python -m benchmarks.predict_speed --visual cache/onnx/visual.onnx \\
        --audio cache/audio/tdnn.onnx --sequence cache/sequence/sequence.onnx
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pipeline.audio.windows import video_audio
from pipeline.data.video import decode_frames
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.faces.moving_photos import astronaut, moving_photo_matrices, render
from pipeline.faces.track import FaceTracker, TrackerConfig
from pipeline.labels import EMBEDDING_DIM
from pipeline.models.preprocess import to_model_input
from pipeline.data.synth.photo_video import write_frames_video
from pipeline.predict.video import PredictConfig, PredictModels, load_models, predict_video
from tooling.bench import harness

FPS = 30
FACE_SHARE = 0.25   # the face's side as a share of the frame's height
PARTS = ("decode", "detection", "landmarks_alignment", "embedding", "audio", "sequence")
# the settings before detection was downscaled: a full-resolution search every 5 frames
BASELINE = PredictConfig(DetectorConfig(min_face_fraction=0.0), TrackerConfig(detect_every=5))


def write_video(path: Path, height: int, n_frames: int, max_angle: float) -> Path:
    """A 16:9 MP4 of the astronaut photograph moving, rendered and encoded one frame at a time."""
    size = (height * 16 // 9 // 2 * 2, height)
    photo = astronaut()
    face = FaceDetector(DetectorConfig()).detect(photo)[0]
    zoom = FACE_SHARE * height / face.box.w
    matrices = moving_photo_matrices(tuple(face.landmarks.mean(axis=0)), n_frames, size, max_angle,
                                     (zoom, 1.2 * zoom), max_shift=height / 8)
    return write_frames_video(path, (render([(photo, m)], size) for m in matrices), fps=FPS)


class _Clock:
    """Wall seconds and this thread's CPU seconds spent in each part."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._started: list[tuple[float, float]] = []

    def start(self) -> None:
        self._started.append((time.perf_counter(), time.thread_time()))

    def stop(self, part: str) -> None:
        wall, cpu = self._started.pop()
        self.wall[part] += time.perf_counter() - wall
        self.cpu[part] += time.thread_time() - cpu


def time_parts(video: Path, models: PredictModels, config: PredictConfig, batch_size: int) -> dict[str, Any]:
    """Run the predict path on ``video`` part by part and time each part and what it found."""
    clock = _Clock()
    detector = FaceDetector(config.detector)
    tracker = FaceTracker(config.tracking, detector)
    detector.detect = _timed(detector.detect, clock, "detection")   # type: ignore[method-assign]
    searches = 0
    frames_with_face, fps, n = 0, float(FPS), 0
    crops: dict[int, list[np.ndarray]] = defaultdict(list)
    present: dict[int, list[int]] = defaultdict(list)
    embeddings: dict[int, list[np.ndarray]] = defaultdict(list)

    def embed(face_id: int) -> None:
        clock.start()
        images = to_model_input(np.stack(crops[face_id])).numpy()
        embeddings[face_id].append(models.visual(images)["embedding"].astype(np.float16))
        clock.stop("embedding")
        crops[face_id].clear()

    for i, (_, fps, image) in enumerate(_timed_iter(decode_frames(video), clock, "decode")):
        n = i + 1
        wall, cpu = clock.wall["detection"], clock.cpu["detection"]
        clock.start()
        faces = tracker.update(image)
        clock.stop("landmarks_alignment")
        # the search inside update is counted as detection, not twice
        clock.wall["landmarks_alignment"] -= clock.wall["detection"] - wall
        clock.cpu["landmarks_alignment"] -= clock.cpu["detection"] - cpu
        searches += clock.wall["detection"] > wall
        frames_with_face += bool(faces)
        for face in faces:
            crops[face.face_id].append(face.crop)
            present[face.face_id].append(i)
            if len(crops[face.face_id]) >= batch_size:
                embed(face.face_id)
    for face_id in list(crops):
        if crops[face_id]:
            embed(face_id)

    clock.start()
    audio_embedding, audio_present = np.zeros((n, EMBEDDING_DIM), np.float16), np.zeros(n, bool)
    if models.audio is not None:
        audio = video_audio(video, n, fps, models.audio.audio_config)
        audio_embedding, audio_present = models.audio.embed(audio, batch_size).astype(np.float16), audio.present
    clock.stop("audio")

    clock.start()
    for face_id, frames in present.items():
        mask = np.zeros(n, bool)
        mask[frames] = True
        visual = np.zeros((n, EMBEDDING_DIM), np.float16)
        visual[frames] = np.concatenate(embeddings[face_id])
        models.sequence.video_logits(visual, audio_embedding, mask, audio_present, batch_size)
    clock.stop("sequence")
    return {"frames": n, "wall": dict(clock.wall), "cpu": dict(clock.cpu), "searches": searches,
            "frames_with_face": frames_with_face, "face_ids": len(present)}


def _timed(fn: Callable[..., Any], clock: _Clock, part: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        clock.start()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.stop(part)
    return call


def _timed_iter(items: Iterator[Any], clock: _Clock, part: str) -> Iterator[Any]:
    while True:
        clock.start()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            clock.stop(part)
        yield item


def parts_record(timed: dict[str, Any]) -> dict[str, Any]:
    """Per part: frames/s of wall time, its share of the summed wall time, and frames/s of this thread's CPU time."""
    n = timed["frames"]
    wall, cpu = timed["wall"], timed["cpu"]

    def per_s(seconds: float) -> float | None:
        return round(n / seconds, 1) if seconds > 0 else None

    return {
        "parts": {part: {"fps": per_s(wall[part]), "share": round(wall[part] / sum(wall.values()), 3),
                         "cpu_fps": per_s(cpu[part])} for part in PARTS},
        "parts_fps": per_s(sum(wall.values())), "parts_cpu_fps": per_s(sum(cpu.values())),
        "searches": timed["searches"], "frames_with_face": timed["frames_with_face"], "face_ids": timed["face_ids"],
    }


def end_to_end(video: Path, models: PredictModels, configs: dict[str, PredictConfig], rounds: int,
               batch_size: int, work: Path) -> dict[str, Any]:
    """Median frames/s of ``predict_video`` with each of two configs, run in alternating rounds, and their ratio."""
    fps: dict[str, list[float]] = defaultdict(list)
    cpu_fps: dict[str, list[float]] = defaultdict(list)
    faces: dict[str, int] = {}
    for r in range(rounds):
        for name, config in configs.items():
            out = work / f"{video.stem}-{name}-{r}.csv"
            wall, cpu = time.perf_counter(), time.process_time()
            summary = predict_video(video, out, config=config, batch_size=batch_size, models=models)
            fps[name].append(summary.frames / (time.perf_counter() - wall))
            cpu_fps[name].append(summary.frames / (time.process_time() - cpu))
            faces[name] = summary.faces
            out.unlink()
    result: dict[str, Any] = {
        name: {"fps": round(statistics.median(v), 1), "rounds_fps": [round(x, 1) for x in v],
               "cpu_fps": round(statistics.median(cpu_fps[name]), 1), "frames_with_face": faces[name]}
        for name, v in fps.items()
    }
    first, second = list(configs)
    result[f"{first}_over_{second}"] = round(statistics.median(a / b for a, b in zip(fps[first], fps[second])), 2)
    result[f"{first}_over_{second}_cpu"] = round(statistics.median(
        a / b for a, b in zip(cpu_fps[first], cpu_fps[second])), 2)
    return result


def peak_rss(video: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Peak resident memory (MiB) of a fresh process predicting ``video`` (this script in ``--rss-of`` mode)."""
    command = [sys.executable, "-m", "benchmarks.predict_speed", "--rss-of", str(video), "--visual", str(args.visual), "--audio",
               str(args.audio), "--sequence", str(args.sequence), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_of(video: Path, args: argparse.Namespace) -> None:
    """Print this process's resident memory after loading the models and its peak after predicting ``video``."""
    models = load_models(args.visual, args.audio, args.sequence, "cpu", args.threads)
    loaded = _status_mib("VmRSS")
    with tempfile.TemporaryDirectory() as work:
        summary = predict_video(video, Path(work) / "out.csv", models=models, batch_size=args.batch_size)
    print(json.dumps({"frames": summary.frames, "models_loaded_mib": round(loaded),
                      "peak_mib": round(_status_mib("VmHWM"))}))


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB.

    The peak is read as ``VmHWM``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent
    across fork and exec, so a child of a large process would report the parent's size.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/self/status has no {field} line")


def main() -> None:
    parser = harness.parser("predict_speed", __doc__)
    parser.add_argument("--visual", type=Path, default=Path("cache/onnx/visual.onnx"))
    parser.add_argument("--audio", type=Path, default=Path("cache/audio/tdnn.onnx"))
    parser.add_argument("--sequence", type=Path, default=Path("cache/sequence/sequence.onnx"))
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=300, help="frames of the 720p and 1080p videos")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    parser.add_argument("--max-angle", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating end-to-end rounds per setting")
    parser.add_argument("--memory-frames", type=int, default=80,
                        help="N: the 4K video is run at N and 3N frames (N >= the batch size, so both embed full batches)")
    parser.add_argument("--rss-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of is not None:
        rss_of(args.rss_of, args)
        return
    bench = harness.start("predict_speed")
    models = load_models(args.visual, args.audio, args.sequence, "cpu", args.threads)
    default = PredictConfig()
    results: dict[str, Any] = {
        "frames": args.frames, "fps": FPS, "face_share_of_height": FACE_SHARE, "max_angle": args.max_angle,
        "threads": args.threads, "batch_size": args.batch_size,
        "settings": {"min_face_fraction": default.detector.min_face_fraction,
                     "detect_every": default.tracking.detect_every},
        "baseline_settings": {"min_face_fraction": BASELINE.detector.min_face_fraction,
                              "detect_every": BASELINE.tracking.detect_every},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for height in args.heights:
            video = write_video(work / f"p{height}.mp4", height, args.frames, args.max_angle)
            entry = parts_record(time_parts(video, models, default, args.batch_size))
            entry["end_to_end"] = end_to_end(video, models, {"default": default, "baseline": BASELINE},
                                             args.rounds, args.batch_size, work)
            results[f"{height}p"] = entry
            print(json.dumps({f"{height}p": entry}), file=sys.stderr)
            video.unlink()
        memory = {}
        for n in (args.memory_frames, 3 * args.memory_frames):
            video = write_video(work / f"uhd{n}.mp4", 2160, n, args.max_angle)
            memory[str(n)] = peak_rss(video, args)
            video.unlink()
        results["2160p_memory"] = memory
    bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
