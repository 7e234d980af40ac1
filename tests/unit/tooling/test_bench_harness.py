"""The benchmark harness: one option convention, one record, and every script going through it.

Each script in ``benchmarks/`` must import as a module of the ``benchmarks`` package (no script
reaches another through ``sys.path``), and publish its record through :mod:`tooling.bench.harness`
under its own module name, so the record's command reruns it.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from tooling.bench import harness

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py")


def test_the_parser_writes_the_record_to_its_usual_path_unless_told() -> None:
    made = harness.parser("face_tracking", "Faces tracked per second.\n\nDetails.")
    assert made.description == "Faces tracked per second."
    assert made.parse_args([]).out == Path("benchmarks/results/face_tracking.json")
    assert made.parse_args(["--out", "x.json"]).out == Path("x.json")
    assert not any(a.dest == "out" for a in harness.parser("faces_check", "Check.", out=False)._actions)


def test_published_record_reruns_the_script_and_equals_what_is_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run = harness.start("face_tracking", ["--frames", "6"])
    out = tmp_path / "results" / "face_tracking.json"
    record = run.publish({"fps": 3.4}, harness.env_threads(), out)
    assert record["command"] == "OMP_NUM_THREADS=2 python -m benchmarks.face_tracking --frames 6"
    assert record["date"] == run.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["machine"]["threads"] == 2 and record["machine"]["load_average_before"] == list(run.load_before)
    assert json.loads(out.read_text()) == record == json.loads(capsys.readouterr().out)
    assert [p.name for p in out.parent.iterdir()] == ["face_tracking.json"]   # no temporary file left


def test_a_record_can_be_written_without_printing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    harness.start("gpu_check", []).publish({}, 1, tmp_path / "gpu.json", echo=False)
    assert capsys.readouterr().out == "" and (tmp_path / "gpu.json").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_imports_as_a_module_of_the_package(script: Path) -> None:
    module = importlib.import_module(f"benchmarks.{script.stem}")
    assert callable(module.main)


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_records_through_the_harness_under_its_own_name(script: Path) -> None:
    tree = ast.parse(script.read_text(), filename=str(script))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                and isinstance(n.value, ast.Name) and n.value.id == "sys"], f"{script.name} edits sys.path"
    direct = sorted({_name(c) for c in _calls(tree)} & {"benchmark_record", "write_record", "ArgumentParser"})
    assert not direct, f"{script.name} calls {direct} itself instead of the harness"
    for call in _calls(tree):
        if _name(call) in ("start", "parser") and isinstance(call.func, ast.Attribute) \
                and getattr(call.func.value, "id", "") == "harness":
            assert isinstance(call.args[0], ast.Constant) and call.args[0].value == script.stem, \
                f"{script.name}:{call.lineno}: harness.{_name(call)}({ast.unparse(call.args[0])}) is not its own name"
