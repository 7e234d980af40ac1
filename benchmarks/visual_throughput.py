"""Visual model throughput: training images/s and embedding faces/s, torch eager vs onnxruntime.

For each backbone (width 1.0, 112x112 input) in one run: a training step (forward + AU BCE loss +
backward + SGD momentum step through ``multitask_step``), torch eager inference of
(embedding, AU logits, expression logits) under ``no_grad``, and onnxruntime inference of the same
model exported by ``pipeline.model_files.onnx_export.export_onnx``. Inputs are random normalised images; timings use
fp32, ``torch.set_num_threads(threads)`` and ORT ``intra_op_num_threads = threads``.

    python -m benchmarks.visual_throughput --device cpu --threads 2 --batch 32
    python -m benchmarks.visual_throughput --device cuda --min-seconds 5

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import onnxruntime as ort
import torch
from torch import nn

from pipeline.device import resolve_device
from pipeline.model_files.onnx_export import export_onnx, make_session
from pipeline.model_files.visual import INPUTS as VISUAL_INPUTS
from pipeline.model_files.visual import OUTPUTS as VISUAL_OUTPUTS
from pipeline.model_files.visual import ExportModule as VisualExportModule
from pipeline.models.multitask import MultiTaskModel, build_model
from pipeline.train.alternating import multitask_step
from pipeline.train.losses import au_bce_loss
from tooling.bench import harness


def timed(step: Callable[[], None], sync: Callable[[], None], min_iters: int, min_seconds: float) -> float:
    """Seconds per call of ``step`` after one warm-up call, over >= min_iters calls and >= min_seconds."""
    step()
    sync()
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        step()
        iters += 1
    sync()
    return (time.perf_counter() - start) / iters


def calibrate_batchnorm(model: nn.Module, batch: torch.Tensor) -> None:
    """Give BN layers the statistics of real activations (fresh running stats explode in eval)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(batch)
    for norm in norms:
        norm.momentum = 0.1


def bench_backbone(name: str, device: torch.device, ort_device: str, args: argparse.Namespace, workdir: Path,
                   width_mult: float = 1.0) -> dict:
    """Training, torch and onnxruntime rates of one backbone; also the export's seconds and file size."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 112, 112, generator=generator)
    targets = torch.randint(0, 2, (args.batch, 12), generator=generator)
    model: MultiTaskModel = build_model({"backbone": name, "width_mult": width_mult, "dropout": 0.0}).to(device)
    x, t = images.to(device), targets.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timing = dict(min_iters=args.min_iters, min_seconds=args.min_seconds)

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    pos_weight = torch.full((12,), 2.0, device=device)

    def train_step() -> None:
        au = model(x)[0]
        multitask_step(model, optimizer, "au", au_bce_loss(au, t, pos_weight))

    model.train()
    train_s = timed(train_step, sync, **timing)

    calibrate_batchnorm(model, x)
    wrapper = VisualExportModule(model).eval()

    def torch_embed() -> None:
        with torch.no_grad():
            wrapper(x)

    torch_s = timed(torch_embed, sync, **timing)

    onnx_path = workdir / f"{name}.onnx"
    export_started = time.perf_counter()
    report = export_onnx(
        wrapper, (images[:2],), onnx_path, VISUAL_INPUTS, VISUAL_OUTPUTS,
        {n: {0: "batch"} for n in (*VISUAL_INPUTS, *VISUAL_OUTPUTS)}, {"benchmark": name}, rtol=args.parity_rtol,
    )
    export_s = time.perf_counter() - export_started
    session = make_session(onnx_path, device=ort_device, threads=args.threads)
    feed = {"image": images.numpy()}
    ort_s = timed(lambda: session.run(None, feed), lambda: None, **timing)
    return {
        "params_million": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_images_per_s": round(args.batch / train_s, 2),
        "embed_torch_faces_per_s": round(args.batch / torch_s, 2),
        "embed_onnxruntime_faces_per_s": round(args.batch / ort_s, 2),
        "onnxruntime_providers": session.get_providers(),
        "onnx_max_abs_diff": report["max_abs_diff"],
        "export_s": round(export_s, 2),
        "onnx_bytes": onnx_path.stat().st_size,
    }


def main() -> None:
    parser = harness.parser("visual_throughput", __doc__)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--backbones", default="iresnet18,iresnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--parity-rtol", type=float, default=1e-3, help="parity tolerance of the export, relative to each output's scale (random weights)")
    args = parser.parse_args()
    bench = harness.start("visual_throughput")

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ort_device = "cuda" if device.type == "cuda" else "cpu"
    per_backbone = {}
    with tempfile.TemporaryDirectory(prefix="visual-bench-") as tmp:
        for name in args.backbones.split(","):
            per_backbone[name] = bench_backbone(name, device, ort_device, args, Path(tmp))
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "batch": args.batch,
        "input": [3, 112, 112],
        "dtype": "float32",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "results": per_backbone,
    }
    bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
