"""Every DVC stage lists, as deps, each project module its command imports (directly or not).

Found statically from the import statements (function-level imports included), so a change to any
module a stage runs reruns that stage, and a stale dvc.yaml fails here rather than silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "stages")


def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Return the project modules ``path`` imports, by dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from pipeline.data import manifest` imports a module, not a name
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if _module_path(n) is not None}


def imported_files(module: str) -> set[Path]:
    """Return the files of ``module`` and of every project module it reaches through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(_module_path(name)))  # type: ignore[arg-type]
    files = {_module_path(n) for n in seen}
    # a package's __init__ holds only its docstring here; the modules themselves are what matter
    return {f.relative_to(ROOT) for f in files if f is not None and f.name != "__init__.py"}


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(path: Path, deps: list[str]) -> bool:
    text = path.as_posix()
    return any(text == dep.rstrip("/") or text.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(_dvc_stages()))
def test_stage_deps_cover_its_imports(stage: str) -> None:
    spec = _dvc_stages()[stage]
    module = f"stages.{STAGES[stage]}"
    missing = sorted(str(f) for f in imported_files(module) if not _covered(f, spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps {missing}"


@pytest.mark.parametrize("stage", sorted(_dvc_stages()))
def test_stage_runs_its_own_command(stage: str) -> None:
    assert _dvc_stages()[stage]["cmd"].startswith(f"mmaffect {stage} ")
