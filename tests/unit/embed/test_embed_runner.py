"""The dask fan-out: every key written once, failures reported by key, complete keys skipped.

One threaded ``LocalCluster`` (two workers) serves the whole module through ``--scheduler``-style
addressing: starting clusters is the slow part, and threads keep the test functions importable
without pickling them by value. Worker processes are exercised by the embed-visual stage test.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from pipeline.embed.runner import ClusterOptions, available_cores, run_tasks
from pipeline.storage.embedding_store import EmbeddingStore

FINGERPRINT = "e" * 64


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster:
        yield cluster.scheduler_address


def _write(path: Path, key: str, n: int) -> dict[str, int]:
    if key.startswith("bad"):
        raise ValueError(f"{key}.mp4: frame 3 is unreadable")
    if key.startswith("bug"):
        raise TypeError("unsupported operand")
    if key.startswith("full"):
        raise OSError(28, "No space left on device", str(path / key / "embedding" / "c" / "0"))
    EmbeddingStore.open_append(path, FINGERPRINT).write(key, {"x": np.full((n, 2), n, np.float16)}, {"n": n})
    return {"frames": n}


def _store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore.open_for_write(tmp_path / "s.zarr", FINGERPRINT, {"model": "m", "params": {}, "dim": 2})


def test_failing_task_is_reported_by_key_and_others_stay_complete(tmp_path: Path, scheduler: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    jobs = {"v1": 3, "bad_v2": 4, "v3": 5}
    with caplog.at_level(logging.INFO):
        report = run_tasks(store, jobs, partial(_write, store.path), ClusterOptions(scheduler=scheduler),
                           progress=False)
    # said once, by the summary the stage prints, not also by a log line
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    assert not report.ok
    assert report.computed == ["v1", "v3"]
    assert list(report.failed) == ["bad_v2"]
    assert report.failed["bad_v2"] == "ValueError: bad_v2.mp4: frame 3 is unreadable"
    assert "bad_v2" in report.summary() and "1 failed" in report.summary()
    assert report.results == {"v1": {"frames": 3}, "v3": {"frames": 5}}
    assert store.keys() == ["v1", "v3"]
    np.testing.assert_array_equal(store.read("v3")["x"], np.full((5, 2), 5, np.float16))


def test_unexpected_errors_are_reported_by_key_too(tmp_path: Path, scheduler: str) -> None:
    store = _store(tmp_path)
    jobs = {"bug_v1": 1, "v2": 2}
    report = run_tasks(store, jobs, partial(_write, store.path), ClusterOptions(scheduler=scheduler), progress=False)
    assert report.failed == {"bug_v1": "TypeError: unsupported operand"}
    assert report.computed == ["v2"] and store.keys() == ["v2"]


def test_complete_keys_are_skipped_on_rerun(tmp_path: Path, scheduler: str) -> None:
    store = _store(tmp_path)
    options = ClusterOptions(scheduler=scheduler)
    run_tasks(store, {"v1": 3}, partial(_write, store.path), options, progress=False)
    marker = store.path / "v1" / "zarr.json"
    before = marker.stat().st_mtime_ns

    report = run_tasks(store, {"v1": 3, "v2": 2}, partial(_write, store.path), options, progress=False)
    assert report.skipped == ["v1"] and report.computed == ["v2"] and report.ok
    assert marker.stat().st_mtime_ns == before
    assert store.keys() == ["v1", "v2"]


def test_own_local_cluster_runs_all_keys(tmp_path: Path) -> None:
    store = _store(tmp_path)
    options = ClusterOptions(n_workers=1, threads_per_worker=1, processes=False)
    report = run_tasks(store, {"a": 1, "b": 2}, partial(_write, store.path), options, progress=False)
    assert report.ok and report.computed == ["a", "b"]


def test_nothing_to_do_starts_no_cluster(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write("a", {"x": np.zeros((1, 2), np.float16)}, {})
    # an unreachable scheduler would fail if contacted
    report = run_tasks(store, {"a": 1}, partial(_write, store.path),
                       ClusterOptions(scheduler="tcp://127.0.0.1:9"), progress=False)
    assert report.skipped == ["a"] and report.computed == []


def test_more_workers_than_cores_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    options = ClusterOptions(n_workers=available_cores() + 1, processes=False)
    with pytest.raises(ValueError, match="cores available"):
        run_tasks(store, {"a": 1}, partial(_write, store.path), options, progress=False)
    with pytest.raises(ValueError, match=">= 1"):
        ClusterOptions(n_workers=0)


def test_a_full_disk_stops_the_run_naming_the_store(tmp_path: Path, scheduler: str) -> None:
    from pipeline.fsio import DiskFullError

    store = _store(tmp_path)
    run_tasks(store, {"v1": 3}, partial(_write, store.path), ClusterOptions(scheduler=scheduler), progress=False)
    jobs = {"v1": 3, "full_v2": 4}
    with pytest.raises(DiskFullError) as info:
        run_tasks(store, jobs, partial(_write, store.path), ClusterOptions(scheduler=scheduler), progress=False)
    assert str(info.value).startswith(f"{store.path}: no space left on device")
    assert store.keys() == ["v1"]  # complete entries stay for the rerun


def test_a_full_disk_is_one_error_not_a_line_per_key(tmp_path: Path, scheduler: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.fsio import DiskFullError

    store = _store(tmp_path)
    jobs = {f"full_v{k}": 2 for k in range(9)} | {f"v{k}": 2 for k in range(20)}
    with caplog.at_level(logging.INFO), pytest.raises(DiskFullError):
        run_tasks(store, jobs, partial(_write, store.path), ClusterOptions(scheduler=scheduler), progress=False)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert logging.getLogger("distributed").level != logging.CRITICAL   # quiet only while the run ends


def _listening_ips() -> set[str]:
    import psutil

    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    return {conn.laddr.ip for proc in procs for conn in proc.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN}


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_own_local_cluster_listens_on_loopback_over_tls_without_a_dashboard(processes: bool) -> None:
    import urllib.request

    from pipeline.embed.runner import dask_client

    before = _listening_ips()
    with dask_client(ClusterOptions(n_workers=1, threads_per_worker=1, processes=processes)) as client:
        info = client.scheduler_info()
        opened = _listening_ips()
        http = f"http://127.0.0.1:{info['services']['dashboard']}"
        assert urllib.request.urlopen(f"{http}/health", timeout=10).read() == b"ok"
        with pytest.raises(urllib.error.HTTPError):  # the pages that list workers and task keys
            urllib.request.urlopen(f"{http}/json/identity.json", timeout=10)
    addresses = [info["address"], *info["workers"]]
    assert all(address.startswith("tls://127.0.0.1:") for address in addresses), addresses
    assert opened - before <= {"127.0.0.1"}, opened


def test_own_local_cluster_refuses_a_client_without_its_key() -> None:
    import gc

    from distributed import Client, Security

    from pipeline.embed.runner import dask_client

    with dask_client(ClusterOptions(n_workers=1, threads_per_worker=1, processes=False)) as client:
        address = client.scheduler.address
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout=3)
        with pytest.raises((OSError, TimeoutError)):  # TLS, but a key of its own
            Client(address, security=Security.temporary(), timeout=3)
        gc.collect()  # the refused clients close themselves when collected: here, not while another starts


def _write_tls_files(folder: Path) -> dict[str, str]:
    """A CA and one certificate it signed, as PEM files (what docs/cluster.md has every machine use)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mmaffect-ca")).issuer_name(name("mmaffect-ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


def test_scheduler_option_speaks_tls_from_the_dask_config(tmp_path: Path) -> None:
    """The TLS set-up of docs/cluster.md: the stage's client takes its certificate from dask's config."""
    import gc

    import dask
    from distributed import LocalCluster, Security

    tls = _write_tls_files(tmp_path)
    security = Security(tls_ca_file=tls["ca"], tls_scheduler_cert=tls["cert"], tls_scheduler_key=tls["key"],
                        tls_worker_cert=tls["cert"], tls_worker_key=tls["key"], tls_client_cert=tls["cert"],
                        tls_client_key=tls["key"], require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1", protocol="tls://",
                      security=security, dashboard_address=None, silence_logs=logging.WARNING) as cluster:
        store = _store(tmp_path)
        options = ClusterOptions(scheduler=cluster.scheduler_address)
        config = {"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": tls["ca"],
                  "distributed.comm.tls.client.cert": tls["cert"], "distributed.comm.tls.client.key": tls["key"]}
        with dask.config.set(config):
            report = run_tasks(store, {"a": 1}, partial(_write, store.path), options, progress=False)
        # without a certificate configured: one line naming the option, not dask's TypeError
        with pytest.raises(ValueError, match=r"^--scheduler tls://127\.0\.0\.1:\d+: no TLS certificates"):
            run_tasks(store, {"b": 1}, partial(_write, store.path), options, progress=False)
        # The client that failed to start closes itself when collected, which deadlocks if that
        # happens while another client starts its event loop: collect it here.
        gc.collect()
    assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    assert report.ok and report.computed == ["a"]
