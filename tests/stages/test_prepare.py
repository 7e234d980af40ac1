"""``mmaffect prepare`` through click: outputs, clean one-line errors, params checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _media import AU_VAL, EXPR_VAL, build_affwild2, build_bp4d
from click.testing import CliRunner

from stages.cli import main

PARAMS = """prepare:
  frame_tolerance: 2
  frame_count: demux
  check_crops: exists
  skip_invalid: false
"""


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = build_affwild2(tmp_path / "affwild2")
    build_bp4d(root / "BP4D")
    return root


def test_help_says_what_it_reads_and_writes() -> None:
    result = CliRunner().invoke(main, ["prepare", "--help"])
    assert result.exit_code == 0
    for word in ("manifest.json", "labels.h5", "report.json", "AU_Set", "--bp4d-root", "--params"):
        assert word in result.output


def test_prepare_writes_the_outputs(root: Path, params: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    args = ["prepare", str(root), str(out), "--bp4d-root", str(root / "BP4D"), "--params", str(params)]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "prepared 5 Aff-Wild2 and 1 BP4D subjects" in result.output
    assert "AU 10, EXPR 8, VA 0" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["subjects"]) == 6
    assert (out / "labels.h5").is_file() and (out / "report.json").is_file()


def test_bad_va_file_is_a_one_line_error(root: Path, params: Path, tmp_path: Path) -> None:
    va = root / "annotations/VA_Set/Validation_Set/vidD.txt"
    va.parent.mkdir(parents=True)
    va.write_text("valence,arousal\n" + "0.1,0.2\n" * 3 + "0.1,7\n" + "0.1,0.2\n" * 4)
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    expected = "VA_Set/Validation_Set/vidD.txt: line 5: valence and arousal must be numbers in [-1, 1] or -5, found '7'"
    assert expected in line


def test_bad_annotation_is_a_one_line_error(root: Path, params: Path, tmp_path: Path) -> None:
    (root / AU_VAL / "vidD.txt").write_text("AU1,AU2\n1,0\n")
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert "vidD.txt: line 1: wrong header" in line
    assert not (tmp_path / "p").exists()


def test_every_fault_is_in_the_one_error_line(root: Path, params: Path, tmp_path: Path) -> None:
    au = root / AU_VAL / "vidD.txt"
    lines = au.read_text().splitlines()
    lines[2], lines[5] = "0,1", "0,0,0,0,0,0,0,0,0,0,0,x"
    au.write_text("\n".join(lines) + "\n")
    (root / EXPR_VAL / "vidD.txt").write_text("Neutral\n1\n")
    (root / "videos/batch2/vidB.avi").unlink()
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert line.startswith("Error: 3 problem(s) in the dataset: ")
    for part in ("AU_Set/Validation_Set/vidD.txt: line 3: expected 12", "; line 6: AU values must be",
                 "EXPR_Set/Validation_Set/vidD.txt: line 1: wrong header", "AU_Set/Validation_Set/vidB.txt: no video"):
        assert part in line, part


def test_missing_video_is_a_one_line_error(root: Path, params: Path, tmp_path: Path) -> None:
    (root / "videos/batch1/vidD.mp4").unlink()
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 1 and result.exception is not None and "Traceback" not in result.output
    assert "Error: " in result.output and "vidD.txt: no video found for subject 'vidD'" in result.output


def test_unknown_params_key_is_a_usage_error(root: Path, tmp_path: Path) -> None:
    params = tmp_path / "bad.yaml"
    params.write_text(PARAMS + "  frame_tolerence: 3\n")
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 2 and "frame_tolerence" in result.output


def test_invalid_params_value_is_a_usage_error(root: Path, tmp_path: Path) -> None:
    params = tmp_path / "bad.yaml"
    params.write_text(PARAMS.replace("frame_tolerance: 2", "frame_tolerance: -3"))
    result = CliRunner().invoke(main, ["prepare", str(root), str(tmp_path / "p"), "--params", str(params)])
    assert result.exit_code == 2 and "prepare.frame_tolerance: must be >= 0" in result.output


def test_repository_params_section_builds_the_config() -> None:
    from pipeline.config import from_dict, load_section, to_dict
    from pipeline.data.prepare import PrepareConfig

    section = load_section(Path(__file__).parents[2] / "params.yaml", "prepare")
    cfg = from_dict(PrepareConfig, section)
    assert to_dict(cfg) == section          # every key is a field and every field is in params.yaml


def test_empty_bp4d_root_means_none(root: Path, params: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    args = ["prepare", str(root), str(out), "--bp4d-root", "", "--params", str(params), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "prepared 5 Aff-Wild2 and 0 BP4D subjects" in result.output


def test_missing_bp4d_root_is_a_usage_error(root: Path, params: Path, tmp_path: Path) -> None:
    args = ["prepare", str(root), str(tmp_path / "p"), "--bp4d-root", str(tmp_path / "nope"), "--params", str(params)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "nope is not a directory" in result.output


def test_an_output_folder_it_did_not_write_is_refused_in_one_line_and_kept(
    root: Path, params: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["prepare", str(root), str(out), "--bp4d-root", str(root / "BP4D"), "--params", str(params)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line and not line.startswith("prepare:")]  # no bars
    assert errors == [f"Error: {out}: exists, is not empty and was not written by mmaffect "
                     "(no .mmaffect-output in it); move it away or choose another output path"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    out.joinpath("notes.txt").unlink()  # emptied, the folder is the stage's to fill; then its own to replace
    for _ in range(2):
        assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / ".mmaffect-output").is_file() and (out / "manifest.json").is_file()


def test_outputs_are_kept_from_other_users(root: Path, params: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "prepared"
    code = ("import os, sys; os.umask(0o022); from stages.cli import main; "
            "sys.argv = ['mmaffect', *sys.argv[1:]]; main()")
    subprocess.run([sys.executable, "-c", code, "prepare", str(root), str(out), "--bp4d-root", str(root / "BP4D"),
                    "--params", str(params)], check=True, capture_output=True)
    assert out.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        name: 0o600 for name in (".mmaffect-output", "labels.h5", "manifest.json", "report.json")}
