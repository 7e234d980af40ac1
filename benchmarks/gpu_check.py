"""The measurements of ``.ci/gpu_check.sh``: training and embedding rates on a GPU, and the tiny pipeline.

One run, one JSON record (written to ``--out`` after every section, so a run stopped by its time
limit still leaves what it measured):

- ``cuda_tests``: the summary of the ``pytest -m cuda`` run the shell script made (``--pytest-junit``);
- ``training``: per backbone, training images/s (forward + AU BCE + backward + SGD step, through the
  trainers' :class:`~pipeline.train.amp.Precision`) for each ``amp`` mode (off = fp32, bf16,
  fp16) in the default and the channels-last layout; fp16 off a GPU is recorded as not run, and so is
  channels-last (the trainers ignore it on the CPU);
- ``embedding``: per backbone, faces/s of (embedding, AU and expression logits) in torch fp32, torch
  under fp16 autocast (bf16 on the CPU), onnxruntime fp32 and onnxruntime float16
  (``visual.fp16.onnx``), both through :class:`~pipeline.inference.visual.VisualEmbedder` with I/O
  binding on the session's device, and how far each is from torch fp32;
- ``pipeline`` (with ``--pipeline``): the whole DAG under ``dvc repro`` on the tiny synthetic preset
  in a temporary git + DVC copy of the repository, every stage that has ``--device`` given
  ``--device DEVICE``, and finetune-visual in bf16 + channels-last with two loader workers.

Models have random weights (BatchNorm statistics calibrated on the random batch); inputs are random
normalised images. ``torch.backends.cudnn.benchmark`` is on for the GPU rates.

    python -m benchmarks.gpu_check --device cuda --pipeline --out benchmarks/results/gpu_check.json
    python -m benchmarks.gpu_check --device cpu --tiny --out /tmp/gpu_check.json   # the CPU rehearsal

Prints the record as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
import yaml

from benchmarks.visual_throughput import calibrate_batchnorm, timed
from pipeline.device import resolve_device
from pipeline.model_files.onnx_export import export_onnx, make_session
from pipeline.model_files.visual import INPUTS as VISUAL_INPUTS
from pipeline.model_files.visual import OUTPUTS as VISUAL_OUTPUTS
from pipeline.model_files.visual import ExportModule as VisualExportModule
from pipeline.model_files.float16 import convert_float16, float16_path
from pipeline.inference.visual import VisualEmbedder
from pipeline.models.multitask import build_model
from pipeline.train.alternating import multitask_step
from pipeline.train.losses import au_bce_loss
from pipeline.train.amp import Precision
from tooling.bench import harness

ROOT = Path(__file__).resolve().parents[1]
AMP_MODES = ("off", "bf16", "fp16")
# the stages whose command takes --device (their dvc.yaml cmd gets --device DEVICE in the copy)
DEVICE_STAGES = ("pretrain-face", "finetune-visual", "embed-visual", "train-audio", "embed-audio",
                 "train-sequence", "evaluate")
# finetune-visual's DataLoader options in the copy (speed only, so they are options, not params)
LOADER_OPTIONS = "--workers 2 --pin-memory --prefetch-factor 2 --no-persistent-workers"
# The tiny pipeline (as tests/integration/test_dvc_repro.py runs it), exercising the GPU training options.
PIPELINE_OVERRIDES: dict[str, dict[str, Any]] = {
    "synth": {"preset": "tiny", "seed": 0},
    "synth_faces": {"identities": 8, "images_per_identity": 3},
    "pretrain_face": {"width_mult": 0.0625, "epochs": 1, "images_per_epoch": 16, "batch_size": 8,
                      "holdout_share": 0.25, "verification_pairs": 20,
                      "min_gain": None, "amp": "bf16"},  # the plumbing, not learning
    "finetune_visual": {"width_mult": 0.0625, "epochs": 1, "max_frames_per_epoch": 128, "batch_size": 32,
                        "amp": "bf16", "channels_last": True},
    "train_audio": {"epochs": 1, "max_segments": 64},
    "train_sequence": {"epochs": 2, "d_model": 32, "heads": 2},
}


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def training_rates(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Training images/s of ``name`` per amp mode and layout (``{amp: {"nchw": .., "channels_last": ..}}``)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 112, 112, generator=generator).to(device)
    targets = torch.randint(0, 2, (args.batch, 12), generator=generator).to(device)
    pos_weight = torch.full((12,), 2.0, device=device)
    rates: dict[str, Any] = {}
    for amp in args.amp.split(","):
        rates[amp] = {}
        for layout, channels_last in (("nchw", False), ("channels_last", True)):
            try:
                precision = Precision(amp, channels_last, device, "gpu_check")  # type: ignore[arg-type]
            except ValueError as exc:
                rates[amp][layout] = {"not_run": str(exc)}
                continue
            if precision.channels_last != channels_last:
                rates[amp][layout] = {"not_run": f"channels_last is ignored on the {device.type.upper()} "
                                                 f"(the trainers use the standard layout there)"}
                continue
            torch.manual_seed(0)
            model = precision.model(build_model({"backbone": name, "width_mult": args.width_mult,
                                                 "dropout": 0.0}).to(device)).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
            x = precision.batch(images)
            losses: list[float] = []

            def step() -> None:
                with precision.autocast():
                    au = model(x)[0]
                    loss = au_bce_loss(au, targets, pos_weight)
                losses.append(float(multitask_step(model, optimizer, "au", loss, scaler=precision.scaler)))

            seconds = timed(step, _sync(device), args.min_iters, args.min_seconds)
            rates[amp][layout] = {"images_per_s": round(args.batch / seconds, 1),
                                  "loss_finite": bool(np.isfinite(losses).all())}
            model = optimizer = None  # free this arm's weights before the next is built
    return rates


def embedding_rates(name: str, args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    """Embedding faces/s of ``name``: torch fp32 and autocast, onnxruntime fp32 and float16."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.embed_batch, 3, 112, 112, generator=generator)
    torch.manual_seed(0)
    model = build_model({"backbone": name, "width_mult": args.width_mult, "dropout": 0.0}).to(device)
    calibrate_batchnorm(model, images.to(device))
    wrapper = VisualExportModule(model).eval()
    x = images.to(device)
    half_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    results: dict[str, Any] = {"batch": args.embed_batch}

    def torch_run(autocast: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(device.type, dtype=half_dtype, enabled=autocast):
                return wrapper(x)[0]
        return run

    reference = torch_run(False)().float().cpu().numpy()
    for key, autocast in (("torch_fp32", False), (f"torch_autocast_{str(half_dtype)[6:]}", True)):
        seconds = timed(torch_run(autocast), _sync(device), args.min_iters, args.min_seconds)
        results[key] = {"faces_per_s": round(args.embed_batch / seconds, 1),
                        **_distance(torch_run(autocast)().float().cpu().numpy(), reference)}
    onnx_path = workdir / f"{name}.onnx"
    export_onnx(wrapper, (images[:2],), onnx_path, VISUAL_INPUTS, VISUAL_OUTPUTS,
                {n: {0: "batch"} for n in (*VISUAL_INPUTS, *VISUAL_OUTPUTS)}, {"benchmark": name},
                rtol=args.parity_rtol)
    half = convert_float16(onnx_path, float16_path(onnx_path), rtol=args.float16_rtol)
    results["float16_cpu_check"] = half["cpu_check"]
    ort_device = "cuda" if device.type == "cuda" else "cpu"
    feed = images.numpy()
    for key, path in (("onnxruntime_fp32", onnx_path), ("onnxruntime_fp16", float16_path(onnx_path))):
        embedder = VisualEmbedder.from_onnx(path, ort_device, threads=args.threads, io_binding=True)
        seconds = timed(lambda: embedder(feed), lambda: None, args.min_iters, args.min_seconds)
        results[key] = {"faces_per_s": round(args.embed_batch / seconds, 1),
                        **_distance(embedder(feed)["embedding"], reference)}
    # what onnxruntime actually ran on (it falls back to the CPU when the CUDA provider cannot start)
    results["onnxruntime_device"] = ort_device
    results["onnxruntime_session_providers"] = make_session(onnx_path, ort_device).get_providers()
    return results


def _distance(embedding: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far an embedding batch is from the torch fp32 one: max abs difference, lowest cosine."""
    cosine = (embedding * reference).sum(1) / (np.linalg.norm(embedding, axis=1) * np.linalg.norm(reference, axis=1))
    return {"max_abs_diff_vs_torch_fp32": float(np.abs(embedding - reference).max()),
            "min_cosine_vs_torch_fp32": float(cosine.min())}


def pytest_summary(junit: Path | None, rc: int | None) -> dict[str, Any]:
    """Counts and failed test ids from a pytest ``--junitxml`` file, with pytest's exit status."""
    if junit is None:
        return {"not_run": "no --pytest-junit given"}
    if not junit.is_file():
        return {"exit_status": rc, "error": f"{junit}: pytest wrote no report"}
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = list(suite.iter("testcase")) if suite is not None else []
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = sum(c.find("skipped") is not None for c in cases)
    return {"exit_status": rc, "tests": len(cases), "passed": len(cases) - len(failed) - skipped,
            "skipped": skipped, "failed": failed}


def run_pipeline(device: str, workdir: Path) -> dict[str, Any]:
    """``dvc repro`` of the tiny pipeline in a fresh git + DVC copy, stages given ``--device device``."""
    repo = workdir / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in PIPELINE_OVERRIDES.items():
        params[section] = dict(values) if section == "synth" else {**params[section], **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dag = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in DEVICE_STAGES:
        dag["stages"][stage]["cmd"] += f" --device {device}"
    dag["stages"]["finetune-visual"]["cmd"] += f" {LOADER_OPTIONS}"
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    began = time.perf_counter()
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    result: dict[str, Any] = {"device": device, "exit_status": proc.returncode, "wall_seconds": round(seconds, 1),
                              "stages_with_device": list(DEVICE_STAGES), "overrides": PIPELINE_OVERRIDES,
                              "finetune_visual_options": LOADER_OPTIONS}
    if proc.returncode != 0:
        result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
        return result
    trainers = {name: json.loads((repo / "metrics" / f"{name}.json").read_text())["validation"]["face_frames"]["score"]
                for name in ("visual", "audio", "sequence")}
    evaluated = json.loads((repo / "metrics" / "evaluate.json").read_text())["face_frames"]["sequence"]
    result["face_frames_score"] = {**trainers, "evaluate_sequence": {task: evaluated[task]["score"]
                                                                     for task in ("au", "expr")}}
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = harness.parser("gpu_check", __doc__)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cuda")
    parser.add_argument("--backbones", default="iresnet50,iresnet100")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=128, help="training batch")
    parser.add_argument("--embed-batch", type=int, default=256, help="embedding batch")
    parser.add_argument("--amp", default=",".join(AMP_MODES), help="amp modes to train in (comma-separated)")
    parser.add_argument("--min-iters", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = its default)")
    parser.add_argument("--parity-rtol", type=float, default=1e-3, help="fp32 export parity (random weights)")
    parser.add_argument("--float16-rtol", type=float, default=2e-2, help="float16 copy vs fp32 on the CPU")
    parser.add_argument("--tiny", action="store_true",
                        help="the CPU rehearsal: width 1/8, batch 4, one timed call each (seconds in all)")
    parser.add_argument("--pipeline", action="store_true", help="also dvc repro the tiny pipeline on --device")
    parser.add_argument("--pytest-junit", type=Path, default=None, help="the cuda tests' junit XML to summarise")
    parser.add_argument("--pytest-rc", type=int, default=None, help="the cuda tests' pytest exit status")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width_mult, args.batch, args.embed_batch, args.min_iters, args.min_seconds = 0.125, 4, 4, 1, 0.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every section, writing the record after each; print and return it."""
    args = parse_args(argv)
    bench = harness.start("gpu_check", argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dry_run": device.type != "cuda", "tiny": args.tiny, "width_mult": args.width_mult, "batch": args.batch,
        "torch": torch.__version__, "onnxruntime": ort.__version__, "onnxruntime_providers":
        ort.get_available_providers(), "cuda_tests": pytest_summary(args.pytest_junit, args.pytest_rc),
        "training": {}, "embedding": {}, "pipeline": {"not_run": "run with --pipeline"},
    }

    def publish(echo: bool = False) -> dict[str, Any]:
        return bench.publish(results, torch.get_num_threads(), args.out, echo)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in args.backbones.split(","):
            results["training"][name] = training_rates(name, args, device)
            publish()
        for name in args.backbones.split(","):
            results["embedding"][name] = embedding_rates(name, args, device, Path(tmp))
            publish()
        if args.pipeline:
            results["pipeline"] = run_pipeline(device.type, Path(tmp))
    return publish(echo=True)


if __name__ == "__main__":
    main()
