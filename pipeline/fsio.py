"""Atomic publication of files and directories, so nothing half-written ever looks complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``target`` (file or directory).

    On an exception the temporary path is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    publish(tmp, target)


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def scratch_dir(prefix: str = "mmaffect-") -> Path:
    """Create and return a fresh temporary directory."""
    return Path(tempfile.mkdtemp(prefix=prefix))
