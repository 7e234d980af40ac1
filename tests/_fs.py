"""A small filesystem to fill up: what a full disk looks like to a stage."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[bool]:
    """Create ``path`` and mount a tmpfs of ``size`` (e.g. "40k") there, yielding True; where that is
    not possible (not root, no mount permission) yield False, and the caller fakes the full disk."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        yield False
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def grow(path: Path, size: str) -> None:
    """Resize the tmpfs mounted at ``path`` (as by :func:`small_filesystem`)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
