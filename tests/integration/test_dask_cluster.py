"""``embed-visual`` and ``embed-audio`` against a real multi-process dask cluster.

The scheduler and two single-threaded workers are started with dask's own commands (``dask
scheduler``, ``dask worker``) as separate processes on 127.0.0.1, as on a cluster; the stages reach
them through ``--scheduler``. Each store must equal, array for array, the store of a local run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from _embed_inputs import tiny_audio_model_dir, tiny_visual_onnx
from pipeline.storage.embedding_store import EmbeddingStore
from stages.embed_audio import command as embed_audio
from stages.embed_visual import command as embed_visual

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT = 120.0  # seconds for the scheduler and both workers to come up on a loaded machine
WORKERS = 2


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """Start one dask command in its own process group, its output going to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([str(DASK), *args], cwd=log.parent, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the process group of a dask command that outlives a short wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the nanny's worker processes too, if any outlived it
    except ProcessLookupError:
        pass
    proc.wait(timeout=15)


def _wait_for(condition, procs: list[subprocess.Popen], what: str, logs: list[Path]) -> None:
    """Poll ``condition`` until true; fail naming ``what`` on timeout or when a process died."""
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            pytest.fail(f"{what}: {'exited: ' + str(dead) if dead else 'timed out'}\n{tails}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running ``dask scheduler`` with ``WORKERS`` ``dask worker`` processes."""
    from distributed import Client

    base = tmp_path_factory.mktemp("dask_cluster")
    info = base / "scheduler.json"
    logs = [base / "scheduler.log", base / "workers.log"]
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)], logs[0])]
    try:
        _wait_for(info.exists, procs, "dask scheduler", logs)
        procs.append(_start(["worker", "--scheduler-file", str(info), "--nworkers", str(WORKERS), "--nthreads", "1",
                             "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(base / "workers"),
                             "--death-timeout", "60"], logs[1]))
        with Client(scheduler_file=str(info), timeout=START_TIMEOUT) as client:
            _wait_for(lambda: len(client.scheduler_info()["workers"]) >= WORKERS, procs, "dask workers", logs)
            address = client.scheduler.address
            pids = set(client.run(os.getpid).values())
        assert len(pids) == WORKERS and os.getpid() not in pids  # separate processes, not this one
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _assert_same_store(cluster: Path, local: Path) -> None:
    """Every attribute, entry, entry attribute and array of the two stores is equal."""
    a, b = EmbeddingStore.open_read(cluster), EmbeddingStore.open_read(local)
    assert a.fingerprint == b.fingerprint and a.attrs == b.attrs
    assert a.keys() == b.keys() and a.keys()
    for key in a.keys():
        assert a.entry_attrs(key) == b.entry_attrs(key)
        arrays, expected = a.read(key), b.read(key)
        assert sorted(arrays) == sorted(expected)
        for name, values in expected.items():
            assert arrays[name].dtype == values.dtype, (key, name)
            np.testing.assert_array_equal(arrays[name], values, err_msg=f"{key}/{name}")


def _executed(scheduler: str) -> int:
    """Tasks the cluster's workers have run so far, all together."""
    from distributed import Client

    with Client(scheduler, timeout=START_TIMEOUT) as client:
        return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def _compare_cluster_with_local(command, args: list[str], params: Path, scheduler: str, tmp_path: Path) -> None:
    """Run an embed stage on the CPU against ``scheduler`` and locally; the stores must be equal."""
    options = ["--params", str(params), "--device", "cpu", "--batch-size", "5", "--no-progress"]
    before = _executed(scheduler)
    for name, where in (("cluster", ["--scheduler", scheduler]),
                        ("local", ["--no-processes", "--workers", "1", "--threads", "1"])):
        result = CliRunner().invoke(command, [*args, str(tmp_path / f"{name}.zarr"), *options,
                                              "--work-dir", str(tmp_path / f"work-{name}"), *where])
        assert result.exit_code == 0, result.output
        if name == "cluster":  # one task per entry ran on the cluster's workers
            assert _executed(scheduler) - before == len(EmbeddingStore.open_read(tmp_path / "cluster.zarr").keys())
    _assert_same_store(tmp_path / "cluster.zarr", tmp_path / "local.zarr")


@pytest.mark.slow
def test_embed_visual_on_the_cluster_equals_the_local_run(
    scheduler: str, tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("embed_visual:\n  chunk_frames: 4\n  sources: [affwild2]\n")
    onnx = tiny_visual_onnx(tmp_path / "visual.onnx")
    _compare_cluster_with_local(embed_visual, [str(tiny_prepared), str(tiny_frames), str(onnx)], params, scheduler,
                                tmp_path)


@pytest.mark.slow
def test_embed_audio_on_the_cluster_equals_the_local_run(scheduler: str, tiny_prepared: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("embed_audio:\n  chunk_frames: 4\n  backend: onnx\n")
    _compare_cluster_with_local(embed_audio, [str(tiny_prepared), str(tiny_audio_model_dir(tmp_path / "audio"))],
                                params, scheduler, tmp_path)
