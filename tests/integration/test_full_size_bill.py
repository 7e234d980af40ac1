"""``python -m benchmarks.full_size_bill --quick``: one run writes a record with every rate, the disk and both bills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from tooling.report.full_size_tables import bill_table

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["prepare", "pack-frames", "pretrain-face", "finetune-visual", "export-onnx", "embed-visual",
          "train-audio", "embed-audio", "train-sequence", "evaluate"]


def _cache(root: Path) -> Path:
    """A finished run's cache as the bill reads it: a manifest and stores of known sizes."""
    subjects = (SubjectRecord(name="v1", video="v1", n_frames=100, n_faces=80),
                SubjectRecord(name="v2_left", video="v2", n_frames=50, n_faces=50),
                SubjectRecord(name="v2_right", video="v2", n_frames=50, n_faces=40),
                SubjectRecord(name="b1", video="b1", source="bp4d", n_frames=30, n_faces=30))
    write_manifest(Manifest(root="data", subjects=subjects), root / "prepared" / "manifest.json")
    (root / "prepared" / "labels.h5").write_bytes(b"l" * 1000)
    (root / "frames").mkdir()
    (root / "frames" / "frames.h5").write_bytes(b"f" * 200_000)
    for name, size in (("visual.zarr", 20_000), ("audio.zarr", 15_000)):
        (root / "embeddings" / name / "g").mkdir(parents=True)
        (root / "embeddings" / name / "g" / "c0").write_bytes(b"z" * size)
    return root


def test_quick_run_writes_every_rate_the_disk_and_both_bills(tmp_path: Path) -> None:
    cache, out = _cache(tmp_path / "cache"), tmp_path / "bill.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # one thread: on CI's 2 shared cores two torch threads can be many times slower, and the keys are the same
    proc = subprocess.run([sys.executable, "-m", "benchmarks.full_size_bill", "--quick", "--threads", "1", "--cache",
                           str(cache), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert json.loads(proc.stdout) == record
    r = record["results"]
    assert r["quick"] is True and r["gpu"].startswith("not measured")
    assert set(record["machine"]) >= {"load_average_before", "load_average_after", "cpu_model"}
    assert record["machine"]["threads"] == 1
    rates = r["rates"]
    for key in ("probe_cpu_s_per_video_hour", "pack_faces_per_s", "read_faces_per_s", "logmel_audio_s_per_s"):
        assert rates[key] > 0, key
    assert set(rates["thread_check"]["median_images_per_s"]) == {"1"} and rates["thread_check"]["ratio"] == 1.0
    for name, plan in r["profiles"].items():
        assert set(rates["visual"][plan["visual"]]) >= {"train_images_per_s", "embed_torch_faces_per_s",
                                                         "embed_onnxruntime_faces_per_s", "export_s", "onnx_bytes"}
        assert set(rates["tdnn"][plan["tdnn"]]) >= {"train_frames_per_s", "embed_frames_per_s"}
        assert set(rates["sequence"][plan["sequence"]]) == {"train_windows_per_s", "infer_windows_per_s"}
        stages = r["bill"][name]["stages"]
        assert [s["stage"] for s in stages] == STAGES
        assert all(s["seconds"] >= 0 and s["formula"] for s in stages)
    # bytes per frame: frames.h5 over the 200 faces, the Zarr stores over Aff-Wild2's frames and videos
    per = r["disk"]["bytes_per_frame"]
    assert per["frames_h5"] == 1000 and per["visual_zarr"] == 100 and per["audio_zarr"] == 100
    assert r["workload"]["frames"] == 2_813_201 and r["workload"]["videos"] == 548
    assert "--quick" in bill_table(record)
