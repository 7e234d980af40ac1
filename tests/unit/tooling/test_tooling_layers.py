"""The layers beside the library: ``benchmarks`` → ``tooling`` → ``pipeline``, never the other way.

The library imports neither the maintenance tooling nor the benchmark scripts, and the tooling does
not import the scripts it serves; read from every module's import statements, so an import inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def crossings(package: str, forbidden: set[str]) -> list[str]:
    """``file: package`` for every module under ``package`` importing one of ``forbidden``."""
    return [f"{path.relative_to(ROOT)}: {name}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for name in sorted(imported_packages(path) & forbidden)]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("pipeline", {"tooling", "benchmarks"}),
    ("tooling", {"benchmarks"}),
])
def test_no_import_runs_back_up(package: str, forbidden: set[str]) -> None:
    assert not crossings(package, forbidden)


def test_the_scan_sees_a_crossing(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tooling.bench.record import cpu_model\n    import benchmarks.synth\n")
    assert imported_packages(module) >= {"tooling", "benchmarks"}
