"""int8 vs float32 visual embedding on the CPU: faces/s of both in one run, and how far int8 strays.

Exports a randomly initialised IResNet (BatchNorm statistics estimated as in ``embed_visual.py``)
or takes ``--onnx``, quantizes it with ``pipeline.model_files.visual.quantize_visual`` (calibrated on
``--crops`` crops of the frame store), then times onnxruntime on the same pre-decoded faces with
both models, alternating float32 and int8 for ``--rounds`` rounds so that load changes of a shared
machine hit both alike; the median of each is reported, with their ratio. Agreement is measured on
the same faces: embedding cosine similarity, and the share of AU decisions (sigmoid > 0.5) and
expression argmaxes that int8 keeps (on a random backbone these say little about trained-model
scores). The load average before and after is recorded: other processes slow both models.
Without ``--frames`` it generates the tiny synthetic dataset. Prints the JSON record and writes it to
``--out`` (default ``benchmarks/results/int8_visual.json``; rendered into docs/visual.md).

    python -m benchmarks.int8_visual --backbone iresnet18 --width-mult 1.0 --threads 2
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from benchmarks.embed_visual import export_backbone
from pipeline.storage.frame_store import FrameStore
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.manifest import read_manifest
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.model_files.onnx_export import make_session
from pipeline.models.preprocess import to_model_input
from pipeline.model_files.int8 import CalibrationConfig, int8_path
from pipeline.model_files.visual import quantize_visual
from tooling.bench import harness
from tooling.bench.timing import rate


def synthetic_frames(base: Path, seed: int) -> Path:
    """The tiny synthetic dataset's frame store."""
    generate_dataset(base / "synthetic", SynthConfig.from_preset("tiny", seed=seed))
    prepare_dataset(base / "synthetic", base / "prepared", PrepareConfig())
    frames = base / "frames.h5"
    pack_frames(read_manifest(base / "prepared" / "manifest.json"), frames, PackConfig())
    return frames


def decoded_faces(frames: Path, n: int) -> np.ndarray:
    """Up to ``n`` face crops of the store, model-normalised, in store order."""
    parts, total = [], 0
    with FrameStore(frames) as store:
        for name in store.names():
            present = np.flatnonzero(store.face_present(name))[: n - total]
            if len(present):
                parts.append(store.read(name, present))
                total += len(present)
            if total >= n:
                break
    return to_model_input(np.concatenate(parts)).numpy()


def run_all(session: Any, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Every output of ``session`` over ``images`` in batches, concatenated."""
    outs = [session.run(None, {"image": images[i:i + batch_size]}) for i in range(0, len(images), batch_size)]
    return [np.concatenate(parts) for parts in zip(*outs)]


def agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Embedding cosine (mean, min) and the shares of AU decisions and expression argmaxes kept."""
    a, b = ref[0].astype(np.float64), got[0].astype(np.float64)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {
        "embedding_cosine_mean": round(float(cosine.mean()), 5),
        "embedding_cosine_min": round(float(cosine.min()), 5),
        "au_decisions_kept": round(float(((ref[1] > 0) == (got[1] > 0)).mean()), 5),
        "expr_argmax_kept": round(float((ref[2].argmax(1) == got[2].argmax(1)).mean()), 5),
    }


def main() -> None:
    parser = harness.parser("int8_visual", __doc__, full_doc=True)
    parser.add_argument("--frames", type=Path, help="a frames.h5 (default: the tiny synthetic dataset's)")
    parser.add_argument("--onnx", type=Path, help="an exported visual.onnx instead of a random backbone")
    parser.add_argument("--backbone", default="iresnet18")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--crops", type=int, default=256, help="calibration crops")
    parser.add_argument("--faces", type=int, default=256, help="faces timed per call")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating float32/int8 timing rounds")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="per timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        frames = args.frames or synthetic_frames(base, args.seed)
        float_path = args.onnx or export_backbone(base / "visual.onnx", args.backbone, args.width_mult, args.seed)
        out = int8_path(base / float_path.name)
        bench = harness.start("int8_visual")
        report = quantize_visual(float_path, frames, out, CalibrationConfig(n_crops=args.crops, seed=args.seed))
        images = decoded_faces(frames, args.faces)
        sessions = {"float32": make_session(float_path, "cpu", args.threads), "int8": make_session(out, "cpu", args.threads)}
        rates: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                rates[name].append(rate(lambda s=session: run_all(s, images, args.batch_size), len(images),
                                        args.min_seconds))
        outputs = {name: run_all(session, images, args.batch_size) for name, session in sessions.items()}
        medians = {name: statistics.median(values) for name, values in rates.items()}
        results = {
            "model": str(args.onnx) if args.onnx else {"backbone": args.backbone, "width_mult": args.width_mult},
            "faces": len(images), "batch_size": args.batch_size, "threads": args.threads,
            "faces_per_s": {name: round(value, 2) for name, value in medians.items()},
            "int8_vs_float32": round(medians["int8"] / medians["float32"], 3),
            "rounds": {name: [round(v, 2) for v in values] for name, values in rates.items()},
            "agreement": agreement(outputs["float32"], outputs["int8"]),
            "calibration_crops": report["calibration"]["n_crops"],
            "file_mb": {"float32": round(float_path.stat().st_size / 1e6, 2), "int8": round(out.stat().st_size / 1e6, 2)},
            "onnxruntime": onnxruntime.__version__,
        }
    bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
