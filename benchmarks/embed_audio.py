"""embed-audio's TDNN pass: window by window (before) vs shared spans (now), onnxruntime and torch.

For one video of synthetic audio, every frame's embedding is computed (a) the way ``embed-audio``
did before: each frame's (64, C) mel window cut out and run through the whole TDNN, in batches of
``--batch-size`` windows (``tdnn.onnx`` or ``TDNN.forward``), and (b) by
:class:`pipeline.inference.audio.AudioEmbedder`, which runs the frame-level layers once per span of
``--batch-size`` consecutive frames and pools every window from it, for both backends. The model
has the demo's TDNN shape (``params.yaml`` ``train_audio.tdnn``) with random weights; one thread,
as each embed-audio task uses. Also reports the largest difference between (a) and (b) after the
float16 cast the store applies, in float16 steps. Prints the JSON record and writes it to ``--out``
(default ``benchmarks/results/embed_audio.json``, rendered into docs/embeddings.md).

    python -m benchmarks.embed_audio
    python -m benchmarks.embed_audio --seconds 60 --channels 512 512 512 512 1500
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pipeline.audio.decode import AudioTrack
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio, track_audio
from pipeline.config import to_dict
from pipeline.model_files.onnx_export import export_onnx, make_session
from pipeline.inference.audio import AudioEmbedder
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.model_files.checkpoint import save_checkpoint
from tooling.bench import harness
from tooling.bench.timing import rate


def _write_models(folder: Path, tdnn: TDNN, cfg: AudioConfig) -> None:
    """``model.pt`` and ``tdnn.onnx`` as train-audio writes them (time axis dynamic)."""
    fusion = FusionConfig()
    save_checkpoint(folder / "model.pt", {
        "tdnn_arch": to_dict(tdnn.cfg), "tdnn": tdnn.state_dict(), "fusion_arch": to_dict(fusion),
        "fusion": FusionHead(fusion).state_dict(), "audio_config": to_dict(cfg),
    })
    export_onnx(tdnn, (torch.randn(2, cfg.n_mels, cfg.context_frames) * 4.0 + 8.0,), folder / "tdnn.onnx",
                input_names=["mel"], output_names=["embedding"],
                dynamic_axes={"mel": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}},
                metadata={"audio_config": to_dict(cfg)})


def _per_window(run: Callable[[np.ndarray], np.ndarray], audio: VideoAudio, batch_size: int) -> np.ndarray:
    """The former embed-audio loop: cut each present frame's window, run the whole TDNN on batches."""
    out = np.zeros((audio.n_frames, 512), np.float32)
    frames = np.flatnonzero(audio.present)
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        out[batch] = run(audio.windows(batch).mel)
    return out


def _float16_steps(new: np.ndarray, old: np.ndarray) -> float:
    """Largest |new - old| after the float16 cast, in float16 steps of the old value."""
    new16, old16 = new.astype(np.float16).astype(np.float32), old.astype(np.float16)
    step = np.spacing(np.abs(old16)).astype(np.float32)
    return float(np.max(np.abs(new16 - old16.astype(np.float32)) / step))


def main() -> None:
    parser = harness.parser("embed_audio", __doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the video")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 128, 128, 128, 256])
    parser.add_argument("--batch-size", type=int, default=64, help="embed-audio's --batch-size")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()
    bench = harness.start("embed_audio")
    torch.set_num_threads(1)
    torch.manual_seed(0)

    cfg = AudioConfig()
    n = len(args.channels)
    tdnn = TDNN(TDNNConfig(channels=tuple(args.channels), kernel_sizes=(5, 3, 3, 1, 1, 1, 1)[:n],
                           dilations=(1, 2, 3, 1, 1, 1, 1)[:n])).eval()
    samples = (np.random.default_rng(0).normal(size=int(args.seconds * 16000)) * 0.1).astype(np.float32)
    audio = track_audio(AudioTrack(samples, 16000, 0.0), int(args.seconds * args.fps), args.fps, cfg)
    frames = audio.n_frames

    with tempfile.TemporaryDirectory() as folder:
        _write_models(Path(folder), tdnn, cfg)
        session = make_session(Path(folder) / "tdnn.onnx", "cpu", threads=1)
        embedders = {backend: AudioEmbedder.from_file(Path(folder) / name, "cpu", threads=1)
                     for backend, name in (("onnx", "tdnn.onnx"), ("torch", "model.pt"))}

    def torch_window(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return tdnn(torch.from_numpy(mel)).numpy()

    old_runs = {"onnx": lambda mel: session.run(["embedding"], {"mel": mel})[0], "torch": torch_window}
    results: dict[str, Any] = {}
    for backend, embedder in embedders.items():
        old = _per_window(old_runs[backend], audio, args.batch_size)
        new = embedder.embed(audio, args.batch_size)
        old_rate = rate(lambda: _per_window(old_runs[backend], audio, args.batch_size), frames, args.min_seconds)
        new_rate = rate(lambda: embedder.embed(audio, args.batch_size), frames, args.min_seconds)
        results[backend] = {
            "window_by_window_frames_per_s": round(old_rate, 1),
            "shared_spans_frames_per_s": round(new_rate, 1),
            "speedup": round(new_rate / old_rate, 2),
            "max_diff_float16_steps": _float16_steps(new, old),
        }
    bench.publish({
        "frames": frames, "fps": args.fps, "context_frames": cfg.context_frames, "batch_size": args.batch_size,
        "tdnn_channels": args.channels, "receptive_field": tdnn.receptive_field, "threads": 1, **results,
    }, threads=1, out=args.out)


if __name__ == "__main__":
    main()
