"""``mmaffect pack-frames`` through click: the store, statistics, clean errors, resumable work dir."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from _fs import grow, small_filesystem
from _media import build_affwild2
from click.testing import CliRunner

from pipeline.data.frame_store import FrameStore
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


def test_crops_deleted_after_prepare_are_named_or_dropped_and_counted(
    setup: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, prepared, params = setup
    gone = [root / "cropped_aligned/vidB/00003.jpg", root / "cropped_aligned/vidB/00005.jpg"]
    for crop in gone:
        crop.unlink()
    out = tmp_path / "frames.h5"
    result = _invoke(prepared, out, params, tmp_path / "work")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert line.startswith("Error: 2 face crop(s) that prepare found are missing: ")
    assert f"{gone[0]} (frame 2 of 'vidB'); {gone[1]} (frame 4 of 'vidB')" in line
    assert not out.exists()

    params.write_text(PARAMS.replace("on_corrupt: error", "on_corrupt: drop"))
    result = _invoke(prepared, out, params, tmp_path / "work")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output[result.output.index("{"):])
    assert stats["dropped"] == 2
    assert not FrameStore(out).face_present("vidB")[[2, 4]].any()
    assert any("vidB: 2 face crop(s) that prepare found are missing" in r.getMessage() for r in caplog.records)


def test_missing_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    (tmp_path / "empty").mkdir()
    result = _invoke(tmp_path / "empty", tmp_path / "f.h5", params, tmp_path / "work")
    assert result.exit_code == 1 and "manifest not found" in result.output and "Traceback" not in result.output


def test_repository_params_section_builds_the_config() -> None:
    from pipeline.config import from_dict, load_section, to_dict
    from pipeline.data.pack_frames import PackConfig

    section = load_section(Path(__file__).parents[2] / "params.yaml", "pack_frames")
    assert to_dict(from_dict(PackConfig, section)) == section


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _same_content(got: Path, want: Path) -> None:
    a, b = FrameStore(got), FrameStore(want)
    assert a.names() == b.names()
    for name in a.names():
        frames = range(a.n_frames(name))
        assert [bytes(x) for x in a.read_jpeg(name, frames)] == [bytes(x) for x in b.read_jpeg(name, frames)]
        assert (a.face_present(name) == b.face_present(name)).all()


def test_disk_full_is_one_line_and_the_rerun_completes(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, prepared, params = setup
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    out = tmp_path / "frames.h5"
    with small_filesystem(tmp_path / "small", "40k") as mounted:
        work = tmp_path / "small" / "work"
        if not mounted:  # no tmpfs: the writes of the second subject on fail as they would there
            import pipeline.data.pack_frames as packer

            real = packer._write_vlen
            calls = iter(range(1_000_000))

            def write_until_full(dataset: h5py.Dataset, *args: object) -> None:
                if next(calls) >= 3:
                    raise OSError(errno.ENOSPC, "No space left on device", dataset.file.filename)
                real(dataset, *args)

            monkeypatch.setattr(packer, "_write_vlen", write_until_full)
        failed = _invoke(prepared, out, params, work)
        assert failed.exit_code == 1 and "Traceback" not in failed.output
        error = [line for line in failed.output.splitlines() if line.startswith("Error: ")]
        # the partial store, or the crop stamps kept beside it (frames.h5.partial.stamps.json)
        assert len(error) == 1 and error[0].startswith(f"Error: {work / 'frames.h5.partial'}"), error
        assert error[0].endswith(": no space left on device; free some space (or point the output elsewhere) "
                                 "and rerun")
        assert not out.exists()
        if mounted:
            grow(tmp_path / "small", "10m")
        monkeypatch.undo()
        rerun = _invoke(prepared, out, params, work)
        assert rerun.exit_code == 0, rerun.output
    _same_content(out, reference)


def test_an_unreadable_partial_store_is_packed_again(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, prepared, params = setup
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    work = tmp_path / "work"
    partial = work / "frames.h5.partial"
    work.mkdir()
    partial.write_bytes(reference.read_bytes()[: reference.stat().st_size // 2])  # cut short, as by a full disk
    out = tmp_path / "frames.h5"
    result = _invoke(prepared, out, params, work)
    assert result.exit_code == 0, result.output
    _same_content(out, reference)
    assert sorted(p.name for p in work.iterdir()) == [".lock"]


def test_temporaries_of_killed_runs_are_removed(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, prepared, params = setup
    out = tmp_path / "out" / "frames.h5"
    out.parent.mkdir()
    dead = _dead_pid()
    for name in (f".frames.h5.staged-{dead}", f".frames.h5.partial-{dead}"):
        (out.parent / name).write_bytes(b"\0" * 128)
    result = _invoke(prepared, out, params, tmp_path / "work")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["frames.h5"]


def test_a_partial_store_is_not_reused_for_crops_that_changed(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.data.pack_frames as packer
    from PIL import Image

    root, prepared, params = setup
    work, out = tmp_path / "work", tmp_path / "frames.h5"

    def fail_to_publish(partial: Path, out_path: Path) -> None:
        raise OSError(f"{out_path}: publishing interrupted")

    monkeypatch.setattr(packer, "_publish", fail_to_publish)
    assert _invoke(prepared, out, params, work).exit_code == 1
    monkeypatch.undo()
    assert (work / "frames.h5.partial").is_file()  # every subject complete in it, as after a failed run
    crop = root / "cropped_aligned/vidB/00003.jpg"
    with Image.open(crop) as image:
        image.rotate(90).save(crop, quality=40)  # the data changed under the partial store (same names)
    result = _invoke(prepared, out, params, work)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["resumed_subjects"] == 4
    assert bytes(FrameStore(out).read_jpeg("vidB", [2])[0]) == crop.read_bytes()


def test_a_yaml_syntax_error_in_params_is_one_line(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, prepared, params = setup
    params.write_text("pack_frames:\n  verify: decode\n chunk_frames: 4\n")
    result = _invoke(prepared, tmp_path / "frames.h5", params, tmp_path / "work")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {params}:3:2: invalid YAML: ")


def test_a_partial_store_is_not_reused_after_a_checkout_of_same_size_crops(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import pipeline.data.pack_frames as packer
    from PIL import Image

    root, prepared, params = setup
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    crop = root / "cropped_aligned/vidB/00003.jpg"
    with Image.open(crop) as image:
        pixels = image.copy()
    pixels.save(crop, quality=90, comment=b"draw 1")

    def fail_to_publish(partial: Path, out_path: Path) -> None:
        raise OSError(f"{out_path}: publishing interrupted")

    monkeypatch.setattr(packer, "_publish", fail_to_publish)
    assert _invoke(prepared, out, params, work).exit_code == 1
    monkeypatch.undo()
    assert (work / "frames.h5.partial").is_file()   # every subject complete in it, as after a failed run
    size, mtime = crop.stat().st_size, crop.stat().st_mtime_ns
    # `dvc checkout` of another version: the file is rewritten with other bytes of the same size
    pixels.save(crop, quality=90, comment=b"draw 2")
    os.utime(crop, ns=(mtime + 10**9, mtime + 10**9))
    assert crop.stat().st_size == size
    result = _invoke(prepared, out, params, work)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["resumed_subjects"] == 4
    assert bytes(FrameStore(out).read_jpeg("vidB", [2])[0]) == crop.read_bytes()
    assert sorted(p.name for p in work.iterdir()) == [".lock"]   # the stamps went with the partial store
