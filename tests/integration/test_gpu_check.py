"""``.ci/gpu_check.sh`` and ``benchmarks/loader_throughput.py`` without a GPU.

Without CUDA the check exits 2 with a clear message and writes nothing; its ``--dry-run`` (the CPU
rehearsal) runs the same measurements at tiny sizes and writes the one JSON record with every section.
The loader benchmark measures decode and augmentation rates per worker count from a frame store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_the_check_says_so_and_measures_nothing(tmp_path: Path) -> None:
    proc = _run(["bash", str(ROOT / ".ci/gpu_check.sh"), "--out", "gpu.json"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "torch sees no CUDA device here" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "gpu.json").exists()
    bad = _run(["bash", str(ROOT / ".ci/gpu_check.sh"), "--fast"], tmp_path)
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr


@pytest.mark.slow
def test_dry_run_writes_one_record_with_every_section(tmp_path: Path) -> None:
    proc = _run(["bash", str(ROOT / ".ci/gpu_check.sh"), "--dry-run", "--out", "gpu.json", "--",
                 "--backbones", "iresnet18"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["benchmark"] == "gpu_check" and "load_average_before" in record["machine"]
    results = record["results"]
    assert results["dry_run"] is True and results["device"] == "cpu"
    tests = results["cuda_tests"]
    # the CUDA tests were collected and, without a GPU, all skipped
    assert tests["exit_status"] == 0 and tests["tests"] >= 3 and tests["skipped"] == tests["tests"]
    training = results["training"]["iresnet18"]
    for amp in ("off", "bf16"):
        assert training[amp]["nchw"]["images_per_s"] > 0 and training[amp]["nchw"]["loss_finite"]
        assert "channels_last is ignored on the CPU" in training[amp]["channels_last"]["not_run"]
    for layout in ("nchw", "channels_last"):
        assert "fp16 needs a CUDA device" in training["fp16"][layout]["not_run"]
    embedding = results["embedding"]["iresnet18"]
    for key in ("torch_fp32", "torch_autocast_bfloat16", "onnxruntime_fp32", "onnxruntime_fp16"):
        assert embedding[key]["faces_per_s"] > 0
        assert embedding[key]["min_cosine_vs_torch_fp32"] > 0.99
    assert embedding["onnxruntime_fp32"]["max_abs_diff_vs_torch_fp32"] < 1e-3
    assert embedding["float16_cpu_check"]["ran"]
    assert results["pipeline"] == {"not_run": "run with --pipeline"}


def test_loader_benchmark_reports_rates_per_worker_count(tiny_frames: Path, tmp_path: Path) -> None:
    proc = _run([sys.executable, "-m", "benchmarks.loader_throughput", "--frames", str(tiny_frames),
                 "--workers", "0,1", "--batch", "4", "--batches", "2", "--train-rates", "100,1000",
                 "--out", str(tmp_path / "loader.json")], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "loader.json").read_text())
    results = printed["results"]
    assert set(results["workers"]) == {"0", "1"} and results["batches_timed"] == 2
    for rates in results["workers"].values():
        assert rates["decode_images_per_s"] > 0 and rates["fed_images_per_s"] > 0
    per_worker = results["per_worker_decode_images_per_s"]
    assert per_worker == results["workers"]["1"]["decode_images_per_s"]
    assert results["workers_needed"] == {"100": -(-100 // per_worker), "1000": -(-1000 // per_worker)}
    assert results["augment_images_per_s"] > 0
