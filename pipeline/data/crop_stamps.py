"""Stamps of a subject's crop files, kept beside a partial frame store: are its crops still the ones packed?

A partial store (``cache/work/pack-frames/frames.h5.partial``) outlives the run that failed, and the
data can change under it: ``dvc checkout`` of another version of the dataset rewrites every crop it
changes, in the same layout and often at the same size. A subject's stamp is a digest of each
crop's name, size and modification time (a rewritten file has a new one even when its size is the
same), recorded when the subject is packed and checked before it is resumed. The stamps live in a
JSON file next to the partial store, never in the store itself, so the published frame store holds
nothing that depends on when its crops were written.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> crop = folder / "00001.jpg"
    >>> _ = crop.write_bytes(b"one")
    >>> stamps = CropStamps(folder / "frames.h5.partial.stamps.json")
    >>> stamps.record("vid", crop_stamp([crop]))
    >>> stamps.matches("vid", crop_stamp([crop]))
    True
    >>> _ = crop.write_bytes(b"two")   # same size, rewritten
    >>> os.utime(crop, ns=(1, 1))       # (a checkout gives it the time it is written)
    >>> CropStamps(folder / "frames.h5.partial.stamps.json").matches("vid", crop_stamp([crop]))
    False
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from pipeline.fsio import atomic_path

log = logging.getLogger(__name__)


def crop_stamp(paths: Sequence[Path]) -> str:
    """A digest of each crop file's name, size and modification time (a missing crop counts as such)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path.name}:-\n".encode())
    return digest.hexdigest()


class CropStamps:
    """The stamps of the subjects packed into one partial store, as a JSON file (written atomically)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stamps: dict[str, str] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self.stamps = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
            except (OSError, ValueError) as exc:
                # no stamp means "pack again": the safe reading of a damaged file
                log.warning("%s: unreadable (%s); every subject is packed again", self.path, exc)

    def matches(self, name: str, stamp: str) -> bool:
        """Whether subject ``name`` was packed from crops with this stamp."""
        return self.stamps.get(name) == stamp

    def record(self, name: str, stamp: str) -> None:
        """Note that ``name`` was packed from crops with ``stamp``."""
        self.stamps[name] = stamp
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.stamps, sort_keys=True))

    def remove(self) -> None:
        """Delete the file (its partial store was published)."""
        self.path.unlink(missing_ok=True)
