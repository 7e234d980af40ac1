"""The full-size bill: its arithmetic on hand-made rates, its errors, and its README and docs blocks."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tooling.full_size import Profile, Workload, stage_bill, total
from tooling.report.catalog import RENDERERS
from tooling.report.full_size_tables import SOURCE, bill_inputs, bill_profiles, bill_table, duration
from tooling.bench.record import benchmark_record
from tooling.report.run import render_docs

DISK = {"frames_h5": 4000.0, "labels": 30.0, "visual_zarr": 1000.0, "audio_zarr": 900.0}


def _rates() -> dict:
    return {
        "probe_cpu_s_per_video_hour": 6.0, "pack_faces_per_s": 400.0, "read_faces_per_s": 100.0,
        "logmel_audio_s_per_s": 1000.0,
        "visual": {"r@1": {"train_images_per_s": 50.0, "embed_torch_faces_per_s": 200.0,
                           "embed_onnxruntime_faces_per_s": 400.0, "export_s": 12.0, "onnx_bytes": 2e6, "batch": 16}},
        "tdnn": {"8-16": {"train_frames_per_s": 500.0, "embed_frames_per_s": 2000.0}},
        "sequence": {"d8-h2-b4": {"train_windows_per_s": 20.0, "infer_windows_per_s": 80.0}},
        "seconds": {"probe": 1.0, "visual r@1": 20.0},
        "thread_check": {"model": "r@1", "threads": 2, "ratio": 0.25,
                         "median_images_per_s": {"1": 40.0, "2": 10.0}},
    }


def _profile(**changes) -> Profile:
    values = dict(name="demo", backbone="r", width_mult=1.0, pretrain_epochs=2, pretrain_images_per_epoch=1000,
                  pretrain_verification_images=100, finetune_epochs=3, max_frames_per_epoch=500,
                  tdnn_channels=(8, 16), audio_epochs=4, sequence_epochs=5, sequence_stride=10,
                  sequence_d_model=8, sequence_heads=2, sequence_batch=4, audio_segment_frames=4,
                  audio_max_segments=None, sequence_max_windows=None)
    values.update(changes)
    return Profile(**values)


def _work() -> Workload:
    # 36,000 frames at 30 fps: 1,200 s (1/3 h) of video; 18,000 faces; 27,000 training frames per task.
    return Workload(videos=10, frames=36_000, fps=30.0, face_share=0.5, train_share=0.75)


def test_each_stage_is_its_work_over_its_measured_rate() -> None:
    rows = {row["stage"]: row for row in stage_bill(_rates(), DISK, _work(), _profile())}
    train_image, eval_image = 1 / 50 + 1 / 100, 1 / 200 + 1 / 100
    expected = {
        "prepare": 6.0 / 3,
        "pack-frames": 18_000 / 400,
        "pretrain-face": 2 * 1000 * train_image + 3 * 100 * eval_image,
        "finetune-visual": 3 * (3 * 500 * train_image + 9_000 * eval_image),
        "export-onnx": 12.0,
        "embed-visual": 18_000 * (1 / 400 + 1 / 100),
        "train-audio": 1200 / 1000 + 4 * (3 * 27_000 / 500 + 9_000 / 2000),
        "embed-audio": 1200 / 1000 + 36_000 / 2000,
        "train-sequence": 5 * (3 * 2_700 / 20 + 900 / 80),
        "evaluate": 900 / 80,
    }
    assert list(rows) == list(expected)
    for stage, seconds in expected.items():
        assert math.isclose(rows[stage]["seconds"], seconds), stage
        assert math.isclose(rows[stage]["hours"], seconds / 3600), stage
    assert rows["pack-frames"]["disk_bytes"] == 18_000 * 4000
    assert rows["embed-visual"]["disk_bytes"] == 36_000 * 1000
    assert rows["prepare"]["disk_bytes"] == 36_000 * 30
    bill_total = total(list(rows.values()))
    assert math.isclose(bill_total["seconds"], sum(expected.values()))
    assert bill_total["disk_bytes"] == 18_000 * 4000 + 36_000 * (1000 + 900 + 30) + 3 * 2e6


def test_no_frame_cap_trains_on_every_frame_and_no_pretrain_epochs_cost_nothing() -> None:
    rows = {row["stage"]: row for row in
            stage_bill(_rates(), DISK, _work(), _profile(max_frames_per_epoch=None, pretrain_epochs=0))}
    assert rows["finetune-visual"]["inputs"]["training_images_per_task"] == 27_000
    assert rows["pretrain-face"]["seconds"] == 0.0


def test_the_audio_and_sequence_caps_bound_what_each_task_trains_on() -> None:
    rows = {row["stage"]: row for row in
            stage_bill(_rates(), DISK, _work(), _profile(audio_max_segments=100, sequence_max_windows=50))}
    assert rows["train-audio"]["inputs"]["training_frames_per_task"] == 100 * 4
    assert math.isclose(rows["train-audio"]["seconds"], 1200 / 1000 + 4 * (3 * 400 / 500 + 9_000 / 2000))
    assert rows["train-sequence"]["inputs"]["training_windows_per_task"] == 50
    assert math.isclose(rows["train-sequence"]["seconds"], 5 * (3 * 50 / 20 + 900 / 80))
    # a cap above what the data holds takes every training item
    rows = {row["stage"]: row for row in stage_bill(_rates(), DISK, _work(), _profile(audio_max_segments=10**6))}
    assert rows["train-audio"]["inputs"]["training_frames_per_task"] == 27_000


def test_the_profiles_table_shows_each_cap_or_every_frame() -> None:
    text = bill_profiles(_record())
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:4]]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["`train-audio` segments per task per epoch"] == [
        "100 segments of 4 frames, a fresh draw each epoch", "every training frame"]
    assert rows["`train-sequence` windows per task per epoch"] == ["50 windows, a fresh draw each epoch",
                                                                  "every training frame"]
    assert rows["`finetune-visual` frames per task per epoch"][1] == "every training frame"
    assert rows["`pretrain-face`"][1].startswith("0 epochs")
    assert "max_frames_per_epoch: full-size suggestion" in text and "3 tasks (EXPR, AU, VA)" in text


def test_a_missing_or_bad_rate_is_named() -> None:
    rates = _rates()
    del rates["tdnn"]["8-16"]["embed_frames_per_s"]
    with pytest.raises(KeyError, match="tdnn/8-16/embed_frames_per_s"):
        stage_bill(rates, DISK, _work(), _profile())
    rates = _rates()
    rates["pack_faces_per_s"] = 0.0
    with pytest.raises(ValueError, match="pack_faces_per_s must be a positive number"):
        stage_bill(rates, DISK, _work(), _profile())
    with pytest.raises(ValueError, match="train_share"):
        Workload(videos=1, frames=10, train_share=1.5)


def _record() -> dict:
    work, rates = _work(), _rates()
    profiles = {"demo": _profile(audio_max_segments=100, sequence_max_windows=50),
                "paper": _profile(name="paper", max_frames_per_epoch=None, pretrain_epochs=0,
                                  sources={"max_frames_per_epoch": "full-size suggestion"})}
    bills = {name: stage_bill(rates, DISK, work, plan) for name, plan in profiles.items()}
    units = {key: "unit" for key in (
        "probe_cpu_s_per_video_hour", "pack_faces_per_s", "read_faces_per_s", "visual.*.train_images_per_s",
        "visual.*.embed_*_faces_per_s", "visual.*.export_s", "visual.*.onnx_bytes", "logmel_audio_s_per_s",
        "tdnn.*.train_frames_per_s", "tdnn.*.embed_frames_per_s", "sequence.*.*_windows_per_s")}
    results = {
        "quick": False, "measure_seconds": 30.0,
        "workload": {"videos": 10, "frames": 36_000, "fps": 30.0, "train_share": 0.75, "audio_hours": 1 / 3,
                     "tasks": ["expr", "au", "va"]},
        "profiles": {name: {**dataclasses.asdict(plan), "visual": plan.visual} for name, plan in profiles.items()},
        "rates": rates, "rate_units": units,
        "disk": {"bytes_per_frame": DISK, "bytes": {k: 1 for k in DISK}, "counted": {k: 1 for k in DISK},
                 "cache": "cache"},
        "bill": {name: {"stages": rows, "total": total(rows)} for name, rows in bills.items()},
    }
    return json.loads(json.dumps(benchmark_record("full_size_bill", results, ["benchmarks/full_size_bill.py"], 2)))


def test_the_readme_table_has_every_stage_both_profiles_and_an_unmeasured_gpu() -> None:
    text = bill_table(_record())
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1].strip() for line in lines] == [
        "`prepare`", "`pack-frames`", "`pretrain-face`", "`finetune-visual`", "`export-onnx`", "`embed-visual`",
        "`train-audio`", "`embed-audio`", "`train-sequence`", "`evaluate`"]
    assert all("not measured" in line for line in lines)
    finetune = next(line for line in lines if "finetune-visual" in line).split("|")
    assert finetune[2].strip() == duration(3 * (3 * 500 * 0.03 + 9_000 * 0.015))
    assert finetune[3].strip() == duration(3 * (3 * 27_000 * 0.03 + 9_000 * 0.015))
    assert "36,000 frames" in text and "load average" in text
    assert "2 threads trained `r@1` at 0.25× the rate of 1 thread: the cores were oversubscribed" in text


def test_the_blocks_render_into_a_readme_and_a_docs_page(tmp_path: Path) -> None:
    (tmp_path / SOURCE).parent.mkdir(parents=True)
    (tmp_path / SOURCE).write_text(json.dumps(_record()))
    readme, docs = tmp_path / "README.md", tmp_path / "docs" / "full_size.md"
    docs.parent.mkdir()
    readme.write_text("# x\n<!-- report:full-size-bill -->\n<!-- /report:full-size-bill -->\n")
    docs.write_text("# y\n<!-- report:full-size-inputs -->\n<!-- /report:full-size-inputs -->\n")
    stale = render_docs(tmp_path, [readme, docs], RENDERERS, check=False)
    assert {block.name for block in stale} == {"full-size-bill", "full-size-inputs"}
    assert "| `embed-audio` |" in readme.read_text()
    assert "`pretrain-face` | epochs × images" in docs.read_text()
    assert render_docs(tmp_path, [readme, docs], RENDERERS, check=True) == []
    assert "| `r@1` train at 1 / 2 thread(s) | 40 / 10 |" in bill_inputs(_record())
