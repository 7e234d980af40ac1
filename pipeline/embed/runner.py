"""Fan embedding work out over a dask.distributed cluster: one task per store key, resumable.

Each key (a subject or a video) becomes exactly one task, and that task alone writes the key's entry.
Keys whose entry is already complete are skipped, so a rerun after an interruption computes only what
is missing. A failing task does not stop the others; its error is collected by key in the report.

Example (threads in this process, no worker start-up cost):
    >>> import numpy as np, tempfile, pathlib
    >>> from pipeline.storage.embedding_store import EmbeddingStore
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.zarr"
    >>> store = EmbeddingStore.open_for_write(path, "0" * 64, {"model": "m", "params": {}, "dim": 1})
    >>> def task(key, n):
    ...     EmbeddingStore.open_append(path, "0" * 64).write(key, {"x": np.zeros((n, 1))}, {})
    ...     return {"frames": n}
    >>> report = run_tasks(store, {"a": 3, "b": 5}, task, ClusterOptions(processes=False), progress=False)
    >>> report.computed, report.failed
    (['a', 'b'], {})
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pipeline.config import check_fields
from pipeline.device import DEVICE_CHOICES
from pipeline.fsio import DiskFullError, disk_full_path, publish
from pipeline.storage.embedding_store import EmbeddingStore

log = logging.getLogger(__name__)

# Problems with one entry's inputs (a corrupt video, a missing crop store entry): the task returns
# them as a TaskError so they are reported by key without dask logging a traceback. Anything else
# is a bug and keeps dask's traceback; it is reported by key all the same.
LOOPBACK = "127.0.0.1"  # where a local cluster's scheduler and workers listen
# A local scheduler's HTTP server answers health checks only: its info and json pages list workers
# and task keys, which name subjects and videos.
SCHEDULER_HTTP_ROUTES = ["distributed.http.health"]

INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, KeyError, OSError)


@dataclass(frozen=True)
class TaskError:
    """An input error raised by a task, carried back as its result."""

    message: str
    disk_full: bool = False  # the input was fine: the store's filesystem is full


@dataclass(frozen=True)
class ClusterOptions:
    """Where tasks run: a fresh ``LocalCluster``, or the dask scheduler at ``scheduler``."""

    n_workers: int = 1
    threads_per_worker: int = 1   # tasks a worker runs at once
    processes: bool = True        # worker processes (True) or threads of this process (False)
    scheduler: str | None = None  # e.g. "tcp://10.0.0.5:8786"; the other fields are then unused

    def __post_init__(self) -> None:
        check_fields([
            (self.n_workers >= 1, "n_workers", f"must be >= 1, got {self.n_workers}"),
            (self.threads_per_worker >= 1, "threads_per_worker", f"must be >= 1, got {self.threads_per_worker}"),
        ])

    def check_cores(self) -> None:
        """Refuse a local cluster of more task slots (workers x threads) than this process has cores.

        A stage calls it before it takes its work directory, so bad options leave nothing behind.
        """
        cores = available_cores()
        if self.scheduler is None and self.n_workers * self.threads_per_worker > cores:
            raise ValueError(
                f"{self.n_workers} workers x {self.threads_per_worker} threads exceeds the {cores} "
                "cores available; lower --workers or --threads"
            )


@dataclass(frozen=True)
class InferenceOptions:
    """How each task runs its model: on which device and how many frames per call."""

    device: str = "auto"   # auto | cpu | cuda
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_fields([
            (self.device in DEVICE_CHOICES, "device", f"must be one of {DEVICE_CHOICES}, got {self.device!r}"),
            (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}"),
        ])


@dataclass
class RunReport:
    """What a run did, per key."""

    store: str
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    disk_full: list[str] = field(default_factory=list)  # failed keys whose write found the disk full
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no task failed."""
        return not self.failed

    def summary(self) -> str:
        """A line of counts, then one line per failed key with its error."""
        line = (
            f"{self.store}: {len(self.computed)} computed, {len(self.skipped)} already complete, "
            f"{len(self.failed)} failed in {self.seconds:.1f} s"
        )
        return line + "".join(f"\n  {key}: {error}" for key, error in sorted(self.failed.items()))


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def dask_client(options: ClusterOptions) -> Iterator[Any]:
    """Yield a ``distributed.Client`` on ``options.scheduler`` or on a new ``LocalCluster``.

    A local cluster listens on the loopback interface only, speaks TLS with a key made for this run
    (so other users of the machine cannot submit work to it) and starts no dashboard. An external
    scheduler is trusted with the stage's process: dask sends pickled tasks and results both ways
    (see docs/cluster.md).
    """
    import dask
    from distributed import Client, LocalCluster, Security

    if options.scheduler:
        try:
            client = Client(options.scheduler)
        except TypeError as exc:  # dask's word for a tls:// address without certificates configured
            raise ValueError(
                f"--scheduler {options.scheduler}: no TLS certificates in dask's config for it ({exc}); "
                "see docs/cluster.md, 'Who can reach the cluster'"
            ) from exc
        with client:
            yield client
        return
    options.check_cores()
    with dask.config.set({"distributed.scheduler.http.routes": SCHEDULER_HTTP_ROUTES}):
        cluster = LocalCluster(
            n_workers=options.n_workers,
            threads_per_worker=options.threads_per_worker,
            processes=options.processes,
            # Every server on loopback, the HTTP one a scheduler starts even without a dashboard
            # and worker threads' own included (by default they listen on every interface).
            host=LOOPBACK,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": f"{LOOPBACK}:0"},
            # Loopback is reachable by every user of the machine, and whoever reaches the scheduler
            # runs code in the workers: TLS with a key made for this run admits only our processes.
            security=Security.temporary(),
            silence_logs=logging.WARNING,
        )
    with cluster, Client(cluster) as client:
        yield client


def run_tasks(
    store: EmbeddingStore,
    jobs: Mapping[str, Any],
    task: Callable[[str, Any], Any],
    options: ClusterOptions,
    desc: str = "embed",
    progress: bool | None = None,
) -> RunReport:
    """Run ``task(key, job)`` for every key of ``jobs`` whose entry in ``store`` is not complete.

    ``task`` must write the key's entry itself and be picklable when workers are processes; what it
    returns is kept in ``report.results``. ``progress`` None shows a bar only on a terminal. Raises
    :class:`~pipeline.fsio.DiskFullError` naming the store when a task found its filesystem full.
    """
    from distributed import as_completed
    from tqdm import tqdm

    start = time.perf_counter()
    report = RunReport(store=str(store.path))
    todo = []
    for key in jobs:
        (report.skipped if store.is_complete(key) else todo).append(key)
    if report.skipped:
        log.info("%s: %d of %d entries already complete", desc, len(report.skipped), len(jobs))
    if todo:
        # Unique task names: a long-lived scheduler must never hand back a previous run's result.
        token = uuid.uuid4().hex[:8]
        with contextlib.ExitStack() as quiet, dask_client(options) as client:
            futures = {
                client.submit(_guarded, task, key, jobs[key], key=f"{desc}-{key}-{token}", pure=False, retries=0): key
                for key in todo
            }
            bar = tqdm(as_completed(futures), total=len(futures), desc=desc, unit="entry",
                       disable=None if progress is None else not progress)
            stopped = False
            for future in bar:
                _collect(report, futures[future], future, desc)
                if report.disk_full and not stopped:
                    stopped = True
                    # Every other write would meet the same full disk: start no more tasks, and let the
                    # cluster shut down without its own complaints; the one line is DiskFullError's.
                    client.cancel([f for f in futures if not f.done()])
                    _wait_until_idle(client)
                    quiet.enter_context(_silenced("distributed"))
    report.computed.sort()
    report.seconds = time.perf_counter() - start
    if report.disk_full:
        # not a fault of those keys' inputs: one line naming the store; complete entries stay for the rerun
        raise DiskFullError(store.path)
    return report


def open_work_store(
    work_dir: str | Path,
    out_path: str | Path,
    fingerprint: str,
    attrs: Mapping[str, Any],
    chunk_frames: int,
) -> EmbeddingStore:
    """Open (creating or rebuilding) the store that ``run_and_publish`` completes in ``work_dir``
    before it moves onto ``out_path``: ``work_dir/<out_path's name>``.

    The work directory belongs to the stage (which holds its lock), so whatever an interrupted run
    left there that is not a store of this producer is rebuilt, never left to block the next run.
    """
    work_path = Path(work_dir) / Path(out_path).name
    return EmbeddingStore.open_for_write(work_path, fingerprint, attrs, chunk_frames=chunk_frames,
                                         replace_foreign=True)


def run_and_publish(
    store: EmbeddingStore,
    out_path: str | Path,
    jobs: Mapping[str, Any],
    task: Callable[[str, Any], Any],
    options: ClusterOptions,
    desc: str = "embed",
    progress: bool | None = None,
) -> RunReport:
    """Complete every key of ``jobs`` in the work ``store``, then rename it onto ``out_path``.

    Entries of keys not in ``jobs`` (left by an earlier run) are dropped first, so the published
    store holds exactly ``jobs``. When a task fails nothing is published and the work store keeps
    every completed entry for the next run.
    """
    removed = store.prune(keep=jobs)
    if removed:
        log.info("%s: dropped %d entries that are no longer wanted: %s", desc, len(removed), removed)
    report = run_tasks(store, jobs, task, options, desc, progress)
    if report.ok:
        missing = sorted(set(jobs) - set(store.keys()))
        if missing:
            raise RuntimeError(f"{store.path}: tasks finished but entries {missing} are not complete")
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        publish(store.path, out_path)
        report.store = str(out_path)
    return report


def _executing(dask_worker: Any) -> int:
    """Tasks a worker is running, cancelled ones included (run on the worker by ``client.run``)."""
    return int(dask_worker.state.executing_count)


def _wait_until_idle(client: Any, poll_s: float = 0.2) -> None:
    """Wait for the workers to finish the tasks they were running when theirs were cancelled.

    A cancelled task runs on in its worker's thread; a cluster closed under it leaves the worker
    failing its heartbeat to the scheduler that went away, with a traceback on stderr.
    """
    while any(client.run(_executing).values()):
        time.sleep(poll_s)


@contextmanager
def _silenced(package: str) -> Iterator[None]:
    """Log nothing below CRITICAL from ``package``'s loggers (this process) for the ``with`` block."""
    names = [package, *(name for name in logging.root.manager.loggerDict if name.startswith(f"{package}."))]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _guarded(task: Callable[[str, Any], Any], key: str, job: Any) -> Any:
    """Run ``task(key, job)``, returning input errors as a :class:`TaskError`."""
    try:
        return task(key, job)
    except INPUT_ERRORS as exc:
        return TaskError(f"{type(exc).__name__}: {exc}", disk_full=disk_full_path(exc) is not None)


def _collect(report: RunReport, key: str, future: Any, desc: str) -> None:
    """Record one finished future as computed or failed."""
    if future.status == "finished":
        result = future.result()
        if not isinstance(result, TaskError):
            report.computed.append(key)
            report.results[key] = result
            log.info("%s: wrote %s", desc, key)
            return
        message = result.message
        disk_full = result.disk_full
    else:
        error = future.exception() if future.status == "error" else None
        message = f"{type(error).__name__}: {error}" if error is not None else future.status
        disk_full = error is not None and disk_full_path(error) is not None
    report.failed[key] = message
    if disk_full:
        report.disk_full.append(key)
    # Said once, where the run ends: the report's summary lists each failed key with its error, and a
    # full disk ends the run in one line naming the store (DiskFullError), not a line per key.
    log.debug("%s: %s not written: %s", desc, key, message)
