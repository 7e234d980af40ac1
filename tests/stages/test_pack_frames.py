"""``mmaffect pack-frames`` through click: the store, statistics, clean errors, resumable work dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _media import build_affwild2
from click.testing import CliRunner

from pipeline.data.frames import FrameStore
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from stages.cli import main

PARAMS = """pack_frames:
  verify: decode
  on_corrupt: error
  chunk_frames: 4
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = build_affwild2(tmp_path / "affwild2")
    prepare_dataset(root, tmp_path / "prepared", PrepareConfig(frame_tolerance=2))
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    return root, tmp_path / "prepared", params


def _invoke(prepared: Path, out: Path, params: Path, work: Path) -> object:
    return CliRunner().invoke(
        main,
        ["pack-frames", str(prepared), str(out), "--params", str(params), "--work-dir", str(work), "--no-progress"],
    )


def test_help_says_what_it_reads_and_writes() -> None:
    result = CliRunner().invoke(main, ["pack-frames", "--help"])
    assert result.exit_code == 0
    for word in ("manifest.json", "OUT_H5", "jpeg", "face_present", "--work-dir", "--workers"):
        assert word in result.output


def test_pack_frames_writes_the_store(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, prepared, params = setup
    out = tmp_path / "frames/frames.h5"
    result = _invoke(prepared, out, params, tmp_path / "work")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output[result.output.index("{"):])
    assert stats["subjects"] == 5 and stats["frames"] == 50 and stats["faces"] == 48
    assert stats["store_bytes"] == out.stat().st_size and stats["source_bytes"] > 0
    assert FrameStore(out).read("vidB", [0, 11]).shape == (2, 112, 112, 3)


def test_corrupt_crop_is_a_one_line_error_and_nothing_is_published(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, prepared, params = setup
    (root / "cropped_aligned/vidB/00007.jpg").write_bytes(b"\x00" * 64)
    out = tmp_path / "frames.h5"
    result = _invoke(prepared, out, params, tmp_path / "work")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: " in result.output
    assert "vidB/00007.jpg: frame 6 of subject 'vidB': corrupt JPEG" in result.output
    assert not out.exists()


def test_missing_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    (tmp_path / "empty").mkdir()
    result = _invoke(tmp_path / "empty", tmp_path / "f.h5", params, tmp_path / "work")
    assert result.exit_code == 1 and "manifest not found" in result.output and "Traceback" not in result.output


def test_repository_params_section_builds_the_config() -> None:
    from pipeline.config import from_dict, load_section, to_dict
    from pipeline.data.frames import PackConfig

    section = load_section(Path(__file__).parents[2] / "params.yaml", "pack_frames")
    assert to_dict(from_dict(PackConfig, section)) == section
