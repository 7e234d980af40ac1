"""The frame store while ``pack-frames`` writes it: trusted again only when it was closed cleanly.

HDF5 does not check what it reads back: a file whose writer died, or whose writes failed on a full
disk, can hold object headers and heap lengths that point past its end or into blocks never written,
and h5py's C code then crashes the process (exit 139, nothing printed) instead of raising. So a
partial store is reopened only when its last writer closed it cleanly and said so in a seal written
after the close (``<partial>.sealed``: the file's size, mtime and config); any other partial file is
deleted unopened and the subjects are packed again. The seal is removed before the file is written
again, so a file being written never looks sealed. The seal also carries :attr:`PartialStore.stamps`,
each subject's stamp of the crops written into it (:mod:`pipeline.data.crop_stamps`): kept beside the
store rather than in it, and trusted exactly as far as the store is.

A full disk must not reach HDF5 either. Before each batch of frames is written, :meth:`PartialStore.reserve`
has the filesystem allocate the room that batch can need (``fallocate`` without changing the file's
size, or a free-space check where the filesystem cannot preallocate); when it is refused the run
stops with :class:`~pipeline.fsio.DiskFullError`, closes the store cleanly and seals it, and the next
run resumes in place from the last batch written. A write that fails inside HDF5 all the same (a
quota, another process filling the disk) marks the store damaged (:meth:`PartialStore.writing`): it is
then closed without a seal.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "frames.h5.partial"
    >>> store = PartialStore.open(path, fingerprint="{}", resumable=True)
    >>> with store.writing():
    ...     _ = store.fh.require_group("subjects")
    >>> store.stamps["vidA"] = "3f2a"
    >>> store.close(failing=False)
    >>> again = PartialStore.open(path, fingerprint="{}", resumable=True)
    >>> again.resumed, again.stamps
    (True, {'vidA': '3f2a'})
    >>> again.close(failing=False)
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py

from pipeline.storage.frame_store import IMAGE_SIZE, STORE_VERSION
from pipeline.fsio import DiskFullError, write_json

log = logging.getLogger(__name__)

_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE: allocate blocks past the end without changing the file's size
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


def seal_path(partial: Path) -> Path:
    """Where the seal of the partial store ``partial`` lives."""
    return partial.with_name(f"{partial.name}.sealed")


class PartialStore:
    """An open partial frame store (``fh``) and the guards around its writes.

    ``resumed`` says whether it was reopened from an earlier run's sealed file. ``damaged`` becomes
    true when a write inside :meth:`writing` fails; a damaged store is never sealed. ``stamps`` maps
    each subject to the stamp of the crops written into it; the writer keeps it in step with the
    store, and the seal saves it.
    """

    def __init__(self, path: Path, fh: h5py.File, fingerprint: str, resumable: bool,
                 stamps: dict[str, str] | None = None) -> None:
        self.path, self.fh, self.fingerprint = path, fh, fingerprint
        self.resumable, self.resumed = resumable, stamps is not None
        self.stamps: dict[str, str] = dict(stamps or {})
        self.damaged = False
        self._fd = os.open(path, os.O_RDWR)  # for reserving room; HDF5 keeps its own descriptor

    @classmethod
    def open(cls, path: Path, fingerprint: str, resumable: bool) -> "PartialStore":
        """Reopen the sealed partial store at ``path`` made with ``fingerprint``, or start an empty one
        there (deleting, unopened, any file that is not sealed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        seal = seal_path(path)
        stamps = _sealed_stamps(path, seal, fingerprint) if resumable else None
        if stamps is not None:
            seal.unlink()  # from here on the file is being written: not sealed until closed again
            try:
                return cls(path, h5py.File(path, "r+"), fingerprint, resumable, stamps)
            except OSError as exc:  # sealed and still unreadable: not ours to repair
                log.warning("%s: cannot reopen the partial store (%s); starting over", path, exc)
        elif path.exists():
            log.info("%s: not closed cleanly by its last run (or made with another config); starting over", path)
        seal.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        fh = h5py.File(path, "w")
        fh.attrs.update({"version": STORE_VERSION, "image_size": IMAGE_SIZE, "config": fingerprint,
                         "complete": False})
        return cls(path, fh, fingerprint, resumable)

    @contextmanager
    def writing(self) -> Iterator[h5py.File]:
        """Run HDF5 writes; when they raise, the file may be inconsistent: mark it damaged."""
        try:
            yield self.fh
        except BaseException:
            self.damaged = True
            raise

    def reserve(self, nbytes: int) -> None:
        """Make sure the next ``nbytes`` the store grows by land on allocated blocks, or raise
        :class:`DiskFullError` naming the store before HDF5 writes any of them."""
        end = os.fstat(self._fd).st_size + nbytes
        if _fallocate is not None:
            if _fallocate(self._fd, _KEEP_SIZE, 0, end) == 0:
                return
            code = ctypes.get_errno()
            if code in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(self.path)
            if code not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise OSError(code, os.strerror(code), str(self.path))
        stats = os.statvfs(self.path.parent)  # cannot preallocate here: check the free space instead
        if stats.f_bavail * stats.f_frsize < nbytes:
            raise DiskFullError(self.path)

    def close(self, failing: bool) -> None:
        """Close the file; seal it (when resumable and not damaged) so the next run may reopen it.

        While another error is on its way out (``failing``), a failing close is logged instead of
        hiding that error, and leaves the file unsealed.
        """
        name = str(self.path)
        try:
            self.fh.close()
            os.ftruncate(self._fd, os.fstat(self._fd).st_size)  # give back what reserve() held past the end
        except (OSError, RuntimeError) as exc:
            self.damaged = True
            if not failing:
                raise
            log.debug("%s: closing after the failure also failed (%s)", name, exc)
        finally:
            os.close(self._fd)
        if self.resumable and not self.damaged:
            stat = self.path.stat()
            try:
                write_json(seal_path(self.path), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                  "config": self.fingerprint, "stamps": self.stamps})
            except OSError as exc:  # a full disk, say: the store itself is whole, only its resumption is lost
                log.warning("%s: could not seal the partial store (%s); a rerun would start over", name, exc)


def _sealed_stamps(path: Path, seal: Path, fingerprint: str) -> dict[str, str] | None:
    """The crop stamps in the seal of ``path`` when it is the file the seal describes (same size,
    mtime and config), else None."""
    try:
        mark = json.loads(seal.read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict):
        return None
    stamps = mark.pop("stamps", None)
    if mark != {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "config": fingerprint}:
        return None
    if not isinstance(stamps, dict) or not all(isinstance(v, str) for v in stamps.values()):
        return None
    return {str(name): stamp for name, stamp in stamps.items()}
