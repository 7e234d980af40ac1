"""Kill -9 the real embed-visual stage mid-run, rerun it, and get the uninterrupted result.

The stage runs in a subprocess (with dask worker processes, as in production) on a stand-in model
made slow enough (about 0.2 s per subject) that the test can kill the whole process group after
the first subject is complete and before the last one is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _embed_inputs import build_prepared, tiny_visual_onnx
from pipeline.embed.runner import ClusterOptions, InferenceOptions
from pipeline.embed.visual import EmbedVisualConfig, embed_visual
from pipeline.storage.embedding_store import EmbeddingStore

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ["vidA", "vidB", "vidC_left", "vidC_right", "vidD"]


def _complete(store_path: Path) -> list[str]:
    try:
        return EmbeddingStore.open_read(store_path).keys()
    except FileNotFoundError:
        return []


def _wait_for_first_entry(proc: subprocess.Popen, store_path: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _complete(store_path):
        if proc.poll() is not None:
            pytest.fail(f"the stage exited ({proc.returncode}) before any entry was complete")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no entry became complete in time")
        time.sleep(0.01)


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # dask worker processes share the group and die with it
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("processes of the killed stage are still alive")


@pytest.mark.slow
def test_kill_9_then_rerun_computes_only_missing_subjects(tmp_path: Path) -> None:
    prepared, frames = build_prepared(tmp_path)
    onnx = tiny_visual_onnx(tmp_path / "visual.onnx", slow_layers=4, slow_channels=32)
    params = tmp_path / "params.yaml"
    params.write_text("embed_visual:\n  chunk_frames: 4\n  sources: [affwild2]\n")
    out, work = tmp_path / "out" / "visual.zarr", tmp_path / "work"
    store_path = work / "visual.zarr"
    cmd = [sys.executable, "-m", "stages.cli", "embed-visual", str(prepared), str(frames), str(onnx), str(out),
           "--params", str(params), "--device", "cpu", "--workers", "1", "--threads", "1", "--batch-size", "2",
           "--work-dir", str(work), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_first_entry(proc, store_path)
    _kill_group(proc)

    survivors = _complete(store_path)
    assert 1 <= len(survivors) < len(SUBJECTS), survivors
    assert not out.exists()
    stamps = {key: (store_path / key / "zarr.json").stat().st_mtime_ns for key in survivors}

    resumed = subprocess.run(cmd + ["--no-processes"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    written = set(re.findall(r"embed-visual: wrote (\S+)", resumed.stderr))
    assert written == set(SUBJECTS) - set(survivors)
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == len(survivors) and summary["computed"] == len(SUBJECTS) - len(survivors)
    assert {key: (out / key / "zarr.json").stat().st_mtime_ns for key in survivors} == stamps

    reference = tmp_path / "reference" / "visual.zarr"
    report = embed_visual(prepared, frames, onnx, reference, EmbedVisualConfig(chunk_frames=4),
                          InferenceOptions(device="cpu", batch_size=2), ClusterOptions(processes=False),
                          work_dir=tmp_path / "reference-work", progress=False)
    assert report.ok
    got, want = EmbeddingStore.open_read(out), EmbeddingStore.open_read(reference)
    assert got.keys() == want.keys() == SUBJECTS
    assert got.attrs == want.attrs
    for key in SUBJECTS:
        assert got.entry_attrs(key) == want.entry_attrs(key)
        a, b = got.read(key), want.read(key)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{key}/{name}")
    leftovers = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert leftovers == SUBJECTS  # no half-written entry was published


@pytest.mark.slow
def test_a_second_run_on_the_same_work_dir_is_refused_or_waits(tmp_path: Path) -> None:
    prepared, frames = build_prepared(tmp_path)
    onnx = tiny_visual_onnx(tmp_path / "visual.onnx")
    params = tmp_path / "params.yaml"
    params.write_text("embed_visual:\n  chunk_frames: 4\n  sources: [affwild2]\n")
    out, work = tmp_path / "out" / "visual.zarr", tmp_path / "work"
    cmd = [sys.executable, "-m", "stages.cli", "embed-visual", str(prepared), str(frames), str(onnx), str(out),
           "--params", str(params), "--device", "cpu", "--no-processes", "--batch-size", "8",
           "--work-dir", str(work), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The first run: a process holding the work dir the way a running stage does, for as long as
    # the test says (a real stage finishes too soon to be caught reliably on a loaded machine).
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pipeline.fsio import work_dir_lock\n"
         f"with work_dir_lock({str(work)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert first.stdout.readline().strip() == "held"
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1] == (
            f"Error: another run holds {work} (pid {first.pid}); let it finish, or rerun with --wait"
        )
        assert "Traceback" not in second.stderr
        assert not out.exists() and [p.name for p in work.iterdir()] == [".lock"]
        waiter_log = tmp_path / "waiter.log"
        with waiter_log.open("w") as log_fh:
            waiter = subprocess.Popen(cmd + ["--wait"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=log_fh, text=True)
        deadline = time.monotonic() + 120
        while f"waiting for the run holding {work} (pid {first.pid})" not in waiter_log.read_text():
            assert waiter.poll() is None, waiter_log.read_text()
            assert time.monotonic() < deadline, "the --wait run never said it was waiting"
            time.sleep(0.1)
        assert not out.exists()
    finally:
        first.communicate("")
    stdout, _ = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, waiter_log.read_text()
    assert json.loads(stdout)["computed"] == len(SUBJECTS)
    assert EmbeddingStore.open_read(out).keys() == SUBJECTS
    assert [p.name for p in work.iterdir()] == [".lock"]  # nothing left to block a later run


def test_a_leftover_that_is_not_a_store_is_rebuilt_not_refused(tmp_path: Path) -> None:
    prepared, frames = build_prepared(tmp_path)
    onnx = tiny_visual_onnx(tmp_path / "visual.onnx")
    work = tmp_path / "work"
    (work / "visual.zarr" / "vidA" / "embedding").mkdir(parents=True)  # entries without a root: no store
    (work / "visual.zarr" / "vidA" / "embedding" / "c").write_bytes(b"\0")
    report = embed_visual(prepared, frames, onnx, tmp_path / "out" / "visual.zarr",
                          EmbedVisualConfig(chunk_frames=4), InferenceOptions(device="cpu", batch_size=8),
                          ClusterOptions(processes=False), work_dir=work, progress=False)
    assert report.ok and report.computed == SUBJECTS
    assert EmbeddingStore.open_read(tmp_path / "out" / "visual.zarr").keys() == SUBJECTS
