"""Atomic publication of files and directories, so nothing half-written ever looks complete.

Also the two guards a stage's work directory needs: an exclusive lock, so two runs never write one
store at once (:func:`work_dir_lock`), and the removal of temporaries that killed processes left
behind (:func:`remove_dead_temporaries`). Temporaries carry their writer's pid in their name
(``.<name>.tmp-<pid>``), which is how a later run tells an abandoned one from a live one.

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
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


# errno values meaning the filesystem cannot take more bytes
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# HDF5 reports the failing write's errno inside its message ("..., errno = 28, ...")
_HDF5_ERRNO = re.compile(r"errno = (\d+)")
_HDF5_FILENAME = re.compile(r"filename = '([^']*)'")


class WorkDirBusy(RuntimeError):
    """Another live process holds the lock on a work directory."""


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
    """Yield a temporary sibling path; on success rename it onto ``target`` (file or directory).

    On an exception the temporary path is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):  # what earlier writers of this target were killed holding
        remove_dead_temporaries(target.parent, f".{target.name}.{kind}-")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        publish(tmp, target)
    except BaseException as exc:
        write_error = isinstance(exc, (OSError, RuntimeError))
        full = not isinstance(exc, DiskFullError) and (
            disk_full_path(exc) is not None or (write_error and _nearly_full(target.parent))
        )
        _remove(tmp)
        if full:
            raise DiskFullError(target) from exc
        raise


def publish(tmp: str | Path, target: str | Path) -> None:
    """Replace ``target`` by ``tmp`` with a rename (atomic for files on one filesystem)."""
    tmp, target = Path(tmp), Path(target)
    if tmp.is_dir():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


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
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _lock_holder(lock_path: Path) -> str:
    """The pid recorded in a lock file, or "unknown" while the holder has not written it yet."""
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def remove_dead_temporaries(directory: str | Path, prefix: str) -> list[Path]:
    """Remove the entries of ``directory`` named ``<prefix><pid>`` whose process is no longer alive.

    Writers name their temporaries with their pid so that a later run can tell the leftovers of a
    killed process from the work of one still running. Returns the removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    removed = []
    for entry in sorted(directory.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match and not pid_alive(int(match.group(1))):
            log.info("removing %s, left by process %s, which is no longer running", entry, match.group(1))
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
