"""Atomic publication of files and directories, so nothing half-written ever looks complete.

Every directory the project publishes carries :data:`OUTPUT_MARKER`; a directory holding files
without it is someone else's and is never replaced (:func:`check_replaceable`). Temporaries are
made fresh by ``tempfile`` beside their target, named ``.<name>.tmp-<host>-<pid>-<random>``.

Also the two guards a stage's work directory needs: an exclusive lock, so two runs never write one
store at once (:func:`work_dir_lock`), and the removal of temporaries that killed processes left
behind (:func:`remove_dead_temporaries`): host and pid in a temporary's name are how a later run
tells an abandoned one from a live one.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with work_dir_lock(root / "work"):
    ...     (root / "work" / ".lock").is_file()
    True
    >>> _ = (root / ".out.tmp-999999999").write_text("left by a killed run")
    >>> [p.name for p in remove_dead_temporaries(root, ".out.tmp-")]
    ['.out.tmp-999999999']
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
# In every directory the project publishes: its presence says a later run may replace the directory
# whole; a directory with files and without it is someone else's and is never deleted.
OUTPUT_MARKER = ".mmaffect-output"
MARKER_TEXT = "written by mmaffect: the stage that wrote this folder replaces it whole when it reruns\n"
# This machine's name as temporaries carry it (a shared filesystem sees several machines' writers);
# without "-", which separates it from the pid
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


# errno values meaning the filesystem cannot take more bytes
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# HDF5 reports the failing write's errno inside its message ("..., errno = 28, ...")
_HDF5_ERRNO = re.compile(r"errno = (\d+)")
_HDF5_FILENAME = re.compile(r"filename = '([^']*)'")


class WorkDirBusy(RuntimeError):
    """Another live process holds the lock on a work directory."""


class ForeignOutputError(FileExistsError):
    """An output directory holds files the project did not write; it is not replaced."""


class DiskFullError(OSError):
    """A write failed because its filesystem is full; ``filename`` is the path being written."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: no space left on device; free some space (or point the output elsewhere) and rerun"


def disk_full_path(exc: BaseException) -> str | None:
    """When ``exc`` (or an exception it was raised from) is a full-disk write error, the path it
    names ("" when it names none); otherwise None.

    Recognises ENOSPC/EDQUOT ``OSError``s, HDF5's errors that carry the errno in their text, and
    errors raised while handling one (torch.save reports a failed write as a RuntimeError whose
    context is the OSError).
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, (OSError, RuntimeError)):  # h5py raises either, errno in the text
            text = str(node)
            code = getattr(node, "errno", None)
            if code is None and (match := _HDF5_ERRNO.search(text)):
                code = int(match.group(1))
            if code in _FULL_ERRNOS:
                named = _HDF5_FILENAME.search(text)
                return str(getattr(node, "filename", None) or (named.group(1) if named else ""))
        node = node.__cause__ or node.__context__
    return None


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target`` (file or directory).

    The temporary lives in a fresh directory of this process's own (``tempfile.mkdtemp``, mode
    0o700, its name unpredictable and carrying this host and pid), so what the caller creates there
    cannot be redirected by a link someone planted. On an exception it is removed and ``target`` is
    left untouched. A directory ``target`` that holds files but no :data:`OUTPUT_MARKER` was not
    written here and is refused (:class:`ForeignOutputError`) before anything is written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(target)
    for kind in ("tmp", "old"):  # what earlier writers of this target were killed holding
        remove_dead_temporaries(target.parent, f".{target.name}.{kind}-")
    holder = make_temporary_dir(target.parent, f".{target.name}.tmp-")
    tmp = holder / target.name
    try:
        yield tmp
        publish(tmp, target)
    except BaseException as exc:
        write_error = isinstance(exc, (OSError, RuntimeError))
        full = not isinstance(exc, (DiskFullError, ForeignOutputError)) and (
            disk_full_path(exc) is not None or (write_error and _nearly_full(target.parent))
        )
        _remove(holder)
        if full:
            raise DiskFullError(target) from exc
        raise
    _remove(holder)


def publish(tmp: str | Path, target: str | Path) -> None:
    """Replace ``target`` by ``tmp`` with a rename (atomic for files on one filesystem).

    A directory gets :data:`OUTPUT_MARKER` first, and replaces only an empty directory or one that
    carries the marker (an earlier output of the project); any other is refused with
    :class:`ForeignOutputError`. A file replaces only the file of that name.
    """
    tmp, target = Path(tmp), Path(target)
    if tmp.is_dir() and not tmp.is_symlink():
        (tmp / OUTPUT_MARKER).write_text(MARKER_TEXT)
        check_replaceable(target)
        holder = make_temporary_dir(target.parent, f".{target.name}.old-")
        earlier = holder / target.name
        if target.exists() or target.is_symlink():
            os.replace(target, earlier)
        try:
            os.replace(tmp, target)
        except BaseException:
            if earlier.exists() or earlier.is_symlink():  # put the earlier output back
                os.replace(earlier, target)
            raise
        finally:
            _remove(holder)
    else:
        os.replace(tmp, target)


def check_replaceable(target: str | Path) -> None:
    """Raise :class:`ForeignOutputError` when ``target`` is a directory holding files but no
    :data:`OUTPUT_MARKER`: replacing it would delete what someone else put there."""
    target = Path(target)
    if target.is_symlink() or not target.is_dir():
        return
    if (target / OUTPUT_MARKER).is_file() or not any(target.iterdir()):
        return
    raise ForeignOutputError(
        f"{target}: exists, is not empty and was not written by mmaffect (no {OUTPUT_MARKER} in it); "
        "move it away or choose another output path"
    )


def make_temporary_dir(parent: str | Path, prefix: str) -> Path:
    """Create a fresh directory ``<parent>/<prefix><host>-<pid>-<random>`` (mode 0o700) and return it.

    ``mkdtemp`` creates it exclusively with an unpredictable name, so no one can have planted a link
    there; host and pid in the name let :func:`remove_dead_temporaries` tell an abandoned one from
    one still being written, on this machine or another sharing the filesystem.
    """
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{HOST}-{os.getpid()}-", dir=parent))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | Path, trailer: bytes = b"") -> str:
    """sha256 (hex) of a file's bytes followed by ``trailer``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(trailer)
    return digest.hexdigest()


@contextmanager
def work_dir_lock(directory: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (created if absent) for the ``with`` block.

    The lock is ``flock`` on ``directory/.lock``, which records the holder's pid; the kernel drops it
    when the holder exits, however it ends, so a killed run never leaves the directory locked. When
    another process holds it, raise :class:`WorkDirBusy` naming that pid, or with ``wait`` block until
    it is released. The lock file itself stays: removing it would let a third run lock a new file
    while a second still waits on the old one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_FILE
    fd = _open_lock_file(lock_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(lock_path)
            if not wait:
                raise WorkDirBusy(
                    f"another run holds {directory} (pid {holder}); let it finish, or rerun with --wait"
                ) from None
            log.warning("waiting for the run holding %s (pid %s) to finish", directory, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock


def _open_lock_file(lock_path: Path) -> int:
    """Open (or create, mode 0o600) the lock file without following a link, and check it is a plain file.

    The lock file is truncated and rewritten with the holder's pid: through a planted link that
    would truncate whatever the link points at.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{lock_path}: is a symbolic link, not a lock file; remove it and rerun") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{lock_path}: is not a plain file; remove it and rerun")
    return fd


def _lock_holder(lock_path: Path) -> str:
    """The pid recorded in a lock file, or "unknown" while the holder has not written it yet."""
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def remove_dead_temporaries(directory: str | Path, prefix: str) -> list[Path]:
    """Remove the entries of ``directory`` named ``<prefix><host>-<pid>-<random>`` (or the older
    ``<prefix><pid>``) that this machine's processes left when they died. Returns the removed paths.

    Writers name their temporaries with their host and pid so that a later run can tell the
    leftovers of a killed process from the work of one still running. A temporary of another host
    on a shared filesystem is left alone, however old: this machine cannot tell whether its writer
    still runs (remove it by hand once that machine's run is over).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    # host names carry no "-" (see HOST), so host, pid and the random part split one way only
    current = re.compile(re.escape(prefix) + r"(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[a-z0-9_]+")
    legacy = re.compile(re.escape(prefix) + r"(?P<host>)(?P<pid>\d+)")  # before names carried the host
    removed = []
    for entry in sorted(directory.iterdir()):
        match = current.fullmatch(entry.name) or legacy.fullmatch(entry.name)
        if not match:
            continue
        if match["host"] not in ("", HOST):
            log.info("leaving %s: written from %s, whose processes this machine cannot see", entry, match["host"])
            continue
        if not pid_alive(int(match["pid"])):
            log.info("removing %s, left by process %s, which is no longer running", entry, match["pid"])
            _remove(entry)
            removed.append(entry)
    return removed


def _nearly_full(directory: Path) -> bool:
    """Whether the filesystem of ``directory`` has under 1 MiB left for this user.

    torch.save writes through C++ streams and reports a full disk only as "unexpected pos" or
    "iostream error", with no errno; a write that failed while its temporary filled the disk is
    recognised by what it left.
    """
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < (1 << 20)


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def scratch_dir(prefix: str = "mmaffect-") -> Path:
    """Create and return a fresh temporary directory."""
    return Path(tempfile.mkdtemp(prefix=prefix))
