"""The docstring examples of pipeline/ are run by the suite (setup.cfg: ``--doctest-modules`` over
``pipeline``), so none may be switched off: an example that cannot run is written as a plain usage
block without ``>>>`` prompts instead."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_collects_the_library_doctests() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pytest_section = config["tool:pytest"]
    assert "pipeline" in pytest_section["testpaths"].split()
    assert "--doctest-modules" in pytest_section["addopts"].split()


def test_no_docstring_example_is_skipped() -> None:
    skipped = [f"{path.relative_to(ROOT)}:{number}"
               for path in sorted((ROOT / "pipeline").rglob("*.py"))
               for number, line in enumerate(path.read_text().splitlines(), start=1)
               if "doctest: +SKIP" in line]
    assert not skipped, f"skipped docstring examples (make them run, or write them without prompts): {skipped}"
