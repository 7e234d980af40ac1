"""``mmaffect synth-faces`` through click: both layouts from the params section, and bad params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.data.faces.sets import face_set_info
from stages.cli import main


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_writes_the_set_of_the_params_in_both_layouts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mmaffect.synth_faces")
    params = _params(tmp_path, "synth_faces:\n  identities: 3\n  images_per_identity: 2\n  seed: 5\n")
    result = CliRunner().invoke(main, ["synth-faces", str(tmp_path / "faces"), "--params", str(params),
                                       "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["images"] == 6
    assert face_set_info(tmp_path / "faces/rec") == {"format": "rec", "identities": 3, "images": 6}
    assert face_set_info(tmp_path / "faces/folder") == {"format": "folder", "identities": 3, "images": 6}
    summary = json.loads((tmp_path / "faces/faces_summary.json").read_text())
    assert summary["config"]["seed"] == 5
    assert "read back both layouts: 6 identical images" in caplog.text


def test_bad_params_are_one_line_errors(tmp_path: Path) -> None:
    params = _params(tmp_path, "synth_faces:\n  identities: 1\n  images_per_identity: 2\n")
    result = CliRunner().invoke(main, ["synth-faces", str(tmp_path / "faces"), "--params", str(params)])
    assert result.exit_code == 2 and "synth_faces.identities: must be >= 2, got 1" in result.output
    params = _params(tmp_path, "synth_faces:\n  people: 10\n")
    result = CliRunner().invoke(main, ["synth-faces", str(tmp_path / "faces"), "--params", str(params)])
    assert result.exit_code == 2 and "people" in result.output
    assert not (tmp_path / "faces").exists()
