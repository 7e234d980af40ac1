"""TDNN throughput: per-window embedding vs windows pooled from shared spans, inference and training.

For one minute of synthetic audio at a given video frame rate, every frame's window is embedded
(a) window by window (``TDNN.forward`` on (B, 64, C), what ``tdnn.onnx`` does) and (b) from spans
of consecutive frames (``pipeline.models.tdnn_spans.embed_frames``), in eval mode; and one training
step's cost per frame is measured for the ``train_audio`` segment shape and for one-frame
segments (plain per-window training). Also prints the log-mel rate. Prints one JSON object.

    python -m benchmarks.audio_tdnn
    python -m benchmarks.audio_tdnn --channels 512 512 512 512 1500 --context-s 0.5 --threads 2
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.audio.decode import AudioTrack
from pipeline.models.tdnn_spans import embed_frames, encode_spans, span_batch
from pipeline.audio.features import AudioConfig, LogMel
from pipeline.audio.windows import track_audio
from pipeline.models.tdnn import TDNN, TDNNConfig
from tooling.bench import harness
from tooling.bench.timing import rate


def measure(channels: list[int], context_s: float = 0.5, fps: float = 30.0, segment_frames: int = 4,
            batch_segments: int = 64, batch_size: int = 256, min_seconds: float = 3.0,
            seconds: float = 60.0, baselines: bool = True) -> dict:
    """Log-mel, TDNN inference and TDNN training rates on ``seconds`` of synthetic audio (see the module doc).

    ``baselines=False`` skips the window-by-window inference and one-frame-segment training rates
    (the paths the stages do not take), and reports those two as ``None``.
    """
    torch.manual_seed(0)
    cfg = AudioConfig(context_s=context_s)
    n = len(channels)
    tdnn_cfg = TDNNConfig(channels=tuple(channels), kernel_sizes=(5, 3, 3, 1, 1, 1, 1)[:n],
                          dilations=(1, 2, 3, 1, 1, 1, 1)[:n])
    model = TDNN(tdnn_cfg)
    samples = (np.random.default_rng(0).normal(size=int(seconds * 16000)) * 0.1).astype(np.float32)
    logmel = LogMel(cfg)
    mel_rate = rate(lambda: logmel(torch.from_numpy(samples)), int(seconds), min_seconds)
    audio = track_audio(AudioTrack(samples, 16000, 0.0), int(seconds * fps), fps, cfg, logmel)
    frames = audio.n_frames

    model.eval()
    windows = torch.from_numpy(audio.windows().mel)

    def per_window() -> None:
        with torch.no_grad():
            for i in range(0, frames, batch_size):
                model(windows[i:i + batch_size])

    infer_window = rate(per_window, frames, min_seconds) if baselines else None
    infer_span = rate(lambda: embed_frames(model, audio, chunk_frames=256), frames, min_seconds)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step(segment: int) -> Callable[[], None]:
        count = max(1, (segment_frames * batch_segments) // segment)
        starts = np.random.default_rng(1).integers(0, frames - segment, size=count)
        batch = span_batch([(audio, np.arange(s, s + segment)) for s in starts])

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            encode_spans(model, batch).pow(2).mean().backward()
            optimizer.step()

        return step

    batch_frames = segment_frames * batch_segments
    return {
        "tdnn": {"channels": list(channels), "receptive_field": model.receptive_field,
                 "parameters": sum(p.numel() for p in model.parameters())},
        "context_frames": cfg.context_frames,
        "fps": fps,
        "logmel_audio_seconds_per_s": round(mel_rate, 1),
        "inference_frames_per_s": {"per_window": _rounded(infer_window), "shared_spans": round(infer_span, 1)},
        "training_frames_per_s": {
            f"segments_of_{segment_frames}": round(rate(train_step(segment_frames), batch_frames, min_seconds), 1),
            "segments_of_1": _rounded(rate(train_step(1), batch_frames, min_seconds) if baselines else None),
        },
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    parser = harness.parser("audio_tdnn", __doc__)
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 128, 128, 128, 256])
    parser.add_argument("--context-s", type=float, default=0.5)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--segment-frames", type=int, default=4)
    parser.add_argument("--batch-segments", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256, help="windows per forward, per-window path")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()
    bench = harness.start("audio_tdnn")
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, **measure(args.channels, args.context_s, args.fps, args.segment_frames,
                                                  args.batch_segments, args.batch_size, args.min_seconds)}
    bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
