"""`mmaffect synth`: presets, the params section with overrides, errors as usage messages."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from stages.cli import main
from pipeline.data.synth import SynthConfig
from stages.synth import build_config, command

# a fast variant of tiny: required videos of under a second, two BP4D frames
FAST = {"preset": "tiny", "seed": 4, "video": {"required_duration_s": [0.6, 0.8]}, "bp4d": {"frames": 2}}


def _params(tmp_path: Path, section: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"synth": section, "other_stage": {"x": 1}}))
    return path


def test_params_section_with_overrides(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = CliRunner().invoke(command, [str(out), "--params", str(_params(tmp_path, FAST))])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["seed"] == 4 and summary["videos"] == 7 and summary["bp4d_frames"] == 4
    written = json.loads((out / "synth_summary.json").read_text())
    assert written["config"]["video"]["required_duration_s"] == [0.6, 0.8]
    assert (out / "annotations" / "AU_Set" / "Train_Set").is_dir()
    assert not list(tmp_path.glob(".data.tmp-*")), "no temporary directory is left behind"


def test_seed_option_overrides_params_and_workers_do_not_change_output(tmp_path: Path) -> None:
    params = str(_params(tmp_path, FAST))
    one, two = tmp_path / "one", tmp_path / "two"
    assert CliRunner().invoke(command, [str(one), "--params", params, "--seed", "9"]).exit_code == 0
    result = CliRunner().invoke(command, [str(two), "--params", params, "--seed", "9", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((one / "synth_summary.json").read_text())["seed"] == 9
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_through_the_mmaffect_group(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["synth", str(out), "--params", str(_params(tmp_path, FAST))])
    assert result.exit_code == 0, result.output
    assert (out / "synth_summary.json").is_file()


def test_preset_ignores_the_params_file(tmp_path: Path) -> None:
    assert build_config("tiny", 3, tmp_path / "absent.yaml") == SynthConfig.from_preset("tiny", seed=3)
    assert build_config("demo", None, tmp_path / "absent.yaml").seed == 0
    params = _params(tmp_path, FAST)
    assert build_config(None, None, params) == SynthConfig.from_params(FAST)


def test_unknown_key_is_a_usage_error(tmp_path: Path) -> None:
    params = _params(tmp_path, {**FAST, "video": {"frame_rate": 5}})
    result = CliRunner().invoke(command, [str(tmp_path / "data"), "--params", str(params)])
    assert result.exit_code == 2
    assert "frame_rate" in result.output and not (tmp_path / "data").exists()


def test_missing_preset_key_and_unknown_preset(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, [str(tmp_path / "d"), "--params", str(_params(tmp_path, {"seed": 1}))])
    assert result.exit_code == 2 and "preset" in result.output
    result = CliRunner().invoke(command, [str(tmp_path / "d"), "--params", str(_params(tmp_path, {"preset": "huge"}))])
    assert result.exit_code == 2 and "huge" in result.output


def test_invalid_value_is_a_usage_error(tmp_path: Path) -> None:
    params = _params(tmp_path, {**FAST, "degrade": {"missing_rate": 0.9}})
    result = CliRunner().invoke(command, [str(tmp_path / "d"), "--params", str(params)])
    assert result.exit_code == 2 and "missing_rate" in result.output


def test_help_says_what_it_reads_and_writes() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    assert "synth" in result.output and "cropped_aligned" in result.output and "--preset" in result.output


def test_a_full_disk_is_one_line_naming_the_output(tmp_path: Path, monkeypatch) -> None:
    import errno

    from _fs import small_filesystem

    with small_filesystem(tmp_path / "small", "64k") as mounted:
        if not mounted:  # a write as Python reports a full disk: errno 28, no file name
            def full(self: Path, data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(Path, "write_bytes", full)
        out = tmp_path / "small" / "data"
        result = CliRunner().invoke(main, ["synth", str(out), "--params", str(_params(tmp_path, FAST))])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out}: no space left on device; free some space (or point the output elsewhere) and rerun"
    )
