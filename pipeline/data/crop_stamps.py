"""Stamps of a subject's crop files: are the crops an earlier run packed still the same files?

A partial store (``cache/work/pack-frames/frames.h5.partial``) outlives the run that failed, and the
data can change under it: ``dvc checkout`` of another version of the dataset rewrites every crop it
changes, in the same layout and often at the same size. A stamp is a digest of each crop's name,
size and modification time (a rewritten file has a new one even when its size is the same). It is
built chunk by chunk as a subject is packed, so it describes exactly the crops written so far, and
is kept in the partial store's seal (:mod:`pipeline.data.partial_store`), never in the store itself:
the published frame store holds nothing that depends on when its crops were written.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> crops = [folder / "00001.jpg", folder / "00002.jpg"]
    >>> for crop in crops:
    ...     _ = crop.write_bytes(b"one")
    >>> stamp = CropStamp().add(crops[:1])
    >>> packed_so_far = stamp.hexdigest()
    >>> stamp.add(crops[1:]).hexdigest() == crop_stamp(crops)   # chunk by chunk, or all at once
    True
    >>> _ = crops[0].write_bytes(b"two")   # same size, rewritten
    >>> os.utime(crops[0], ns=(1, 1))      # (a checkout gives it the time it is written)
    >>> crop_stamp(crops[:1]) == packed_so_far
    False
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence


class CropStamp:
    """A running stamp of crop files, extended one batch of crops at a time (in frame order)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, paths: Sequence[Path]) -> "CropStamp":
        """Take in each crop's name, size and modification time (a missing crop counts as such).

        Call it before the crops are read: a file rewritten after this stat then shows a new stamp,
        where one stat after the read could match new bytes that were never packed.
        """
        for path in paths:
            try:
                stat = os.stat(path)
                self._digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                self._digest.update(f"{path.name}:-\n".encode())
        return self

    def hexdigest(self) -> str:
        """The stamp of every crop added so far (more may be added after)."""
        return self._digest.hexdigest()


def crop_stamp(paths: Sequence[Path]) -> str:
    """The stamp of the crop files ``paths`` as they are now."""
    return CropStamp().add(paths).hexdigest()
