"""The workspace files a DVC workspace experiment changes, kept so that a failed experiment can be undone.

``dvc exp run`` (without ``--temp``) writes the experiment's ``-S`` values into ``params.yaml``,
removes the outputs of the stages it reruns, and updates ``dvc.lock`` and the metrics files as
they finish. An experiment that fails leaves its params and the deleted outputs behind;
:class:`Workspace` puts back ``params.yaml``, ``dvc.lock`` and the outputs DVC does not cache (the
metrics files), and ``dvc checkout --force`` restores the cached outputs that ``dvc.lock`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.config import read_yaml
from pipeline.fsio import atomic_path

# What `dvc exp run` changes in the workspace besides the DVC-cached outputs: restored as they were
# before a failed experiment (the metrics files, outs with `cache: false`, are added from dvc.yaml).
WORKSPACE_FILES: tuple[str, ...] = ("params.yaml", "dvc.lock")


def _cache_false_outs(dvc_yaml: Path) -> list[str]:
    """The outs and metrics of ``dvc_yaml`` that DVC does not cache (``dvc checkout`` cannot restore them)."""
    if not dvc_yaml.is_file():
        return []
    paths = []
    for stage in (read_yaml(dvc_yaml).get("stages") or {}).values():
        for entry in [*(stage.get("outs") or []), *(stage.get("metrics") or [])]:
            if isinstance(entry, dict):
                paths += [path for path, flags in entry.items() if (flags or {}).get("cache", True) is False]
    return paths


class Workspace:
    """The workspace files a workspace experiment changes under ``root``, kept so a failed one can be undone."""

    def __init__(self, root: Path, run: Callable[[list[str]], None]) -> None:
        self.root = root
        self.run = run  # runs a dvc command line, raising on failure
        self.paths = [root / name for name in (*WORKSPACE_FILES, *_cache_false_outs(root / "dvc.yaml"))]
        self.saved: dict[Path, bytes | None] = {}

    def save(self) -> None:
        """Remember the files as they are now: the last good state."""
        self.saved = {path: path.read_bytes() if path.is_file() else None for path in self.paths}

    def restore(self) -> None:
        """Put the saved files back, then let ``dvc checkout`` bring the cached outputs in line with dvc.lock."""
        for path, data in self.saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
        self.run(["dvc", "checkout", "--force"])
