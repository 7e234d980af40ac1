"""``mmaffect pack-frames`` through click: the store, statistics, clean errors, resumable work dir."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from _fs import grow, small_filesystem
from _media import build_affwild2
from click.testing import CliRunner

from pipeline.storage.frame_store import FrameStore
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
            _fail_writes_after(monkeypatch, 3)
        failed = _invoke(prepared, out, params, work)
        assert failed.exit_code == 1 and "Traceback" not in failed.output
        error = [line for line in failed.output.splitlines() if line.startswith("Error: ")]
        assert error == [f"Error: {work / 'frames.h5.partial'}: no space left on device; free some space "
                         "(or point the output elsewhere) and rerun"]
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


def _fail_writes_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Make every HDF5 chunk write after the first ``writes`` fail as a full disk does (ENOSPC)."""
    import pipeline.data.pack_frames as packer

    real = packer._write_vlen
    calls = iter(range(1_000_000))

    def write_until_full(dataset: h5py.Dataset, *args: object) -> None:
        if next(calls) >= writes:
            raise OSError(errno.ENOSPC, "No space left on device", dataset.file.filename)
        real(dataset, *args)

    monkeypatch.setattr(packer, "_write_vlen", write_until_full)


def _refuse_room_after(monkeypatch: pytest.MonkeyPatch, grants: int) -> None:
    """Make the filesystem refuse (ENOSPC) every reservation after the first ``grants``."""
    import ctypes

    import pipeline.data.partial_store as partial_store

    calls = iter(range(1_000_000))

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        if next(calls) < grants:
            return 0
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(partial_store, "_fallocate", fallocate)


def test_a_full_disk_is_caught_before_hdf5_and_the_rerun_resumes_in_place(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The room of each chunk is reserved first: a refusal stops the run with the file closed cleanly
    and sealed, and the rerun continues in it, growing it no more than a fresh pack would."""
    _, prepared, params = setup
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    caplog.set_level(logging.INFO, logger="pipeline.data.pack_frames")
    _refuse_room_after(monkeypatch, grants=4)  # vidA's 10 frames (3 chunks of 4), then 1 chunk of vidB
    failed = _invoke(prepared, out, params, work)
    monkeypatch.undo()
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert [line for line in failed.output.splitlines() if line.startswith("Error: ")] == [
        f"Error: {work / 'frames.h5.partial'}: no space left on device; free some space "
        "(or point the output elsewhere) and rerun"]
    assert (work / "frames.h5.partial.sealed").is_file()
    with h5py.File(work / "frames.h5.partial", "r") as fh:
        assert fh["subjects/vidB"].attrs["written"] == 4 and not fh["subjects/vidB"].attrs["complete"]
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.output[rerun.output.index("{"):])["resumed_subjects"] == 1
    assert caplog.messages.count("vidB: resuming at frame 4 of 12") == 1
    # no carried-over copy: at most the heap blocks HDF5 does not refill after a reopen (two crops' size)
    largest = max(p.stat().st_size for p in (prepared.parent / "affwild2/cropped_aligned").rglob("*.jpg"))
    assert out.stat().st_size <= reference.stat().st_size + 2 * largest
    _same_content(out, reference)
    assert sorted(p.name for p in work.iterdir()) == [".lock"]


def test_a_write_that_failed_inside_hdf5_is_never_reopened(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 may leave a file whose writes failed with pointers past its end (h5py then crashes the
    process when it reads them): such a partial store is deleted unopened and packed again."""
    import pipeline.data.partial_store as partial_store

    _, prepared, params = setup
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    _fail_writes_after(monkeypatch, 5)
    failed = _invoke(prepared, out, params, work)
    monkeypatch.undo()
    assert failed.exit_code == 1 and "no space left on device" in failed.output
    assert (work / "frames.h5.partial").is_file() and not (work / "frames.h5.partial.sealed").exists()
    opened: list[tuple[str, str]] = []
    real_file = h5py.File

    def spy_file(path: object, mode: str = "r", **kwargs: object) -> h5py.File:
        opened.append((str(path), mode))
        return real_file(path, mode, **kwargs)

    monkeypatch.setattr(partial_store.h5py, "File", spy_file)
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    # besides prepare's labels.h5 (read for the crops it found), only the new partial store is opened
    assert [entry for entry in opened if entry != (str(prepared / "labels.h5"), "r")] == [
        (str(work / "frames.h5.partial"), "w")]
    monkeypatch.undo()
    assert json.loads(rerun.output[rerun.output.index("{"):])["resumed_subjects"] == 0
    _same_content(out, reference)


def test_the_rerun_after_a_full_disk_needs_no_more_room_than_a_fresh_pack(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """On a real filesystem (a tmpfs, where this runs as root): the smallest size a fresh pack fits in
    is found, a run fails on less, and the rerun completes once the disk has that size (and 32 KiB),
    where copying the earlier run's subjects into a new file needed their room twice."""
    import numpy as np
    from PIL import Image

    root, prepared, params = setup
    rng = np.random.default_rng(0)
    for crop in sorted((root / "cropped_aligned").rglob("*.jpg")):  # noise: 11 KB each, the data dominates
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(crop, quality=90)
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    small = tmp_path / "small"
    with small_filesystem(small, "40k") as mounted:
        if not mounted:
            pytest.skip("needs a tmpfs mount (root); the fault-injection tests above cover the logic")
        out, work = small / "frames.h5", small / "work"

        def fresh_pack_fits(pages: int) -> bool:
            grow(small, f"{4 * pages}k")
            done = _invoke(prepared, out, params, work).exit_code == 0
            shutil.rmtree(work, ignore_errors=True)
            out.unlink(missing_ok=True)
            return done

        low, high = 1, 1024  # tmpfs sizes in 4 KiB pages: 40k fails, 4m fits
        assert fresh_pack_fits(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if fresh_pack_fits(middle) else (middle, high)
        grow(small, f"{4 * (high * 4 // 5)}k")  # fails with most subjects packed
        failed = _invoke(prepared, out, params, work)
        assert failed.exit_code == 1 and "no space left on device" in failed.output
        # HDF5 does not refill the earlier run's last heap collections when the file is reopened: up to
        # two JPEGs' room more (24 KB measured here); carrying the subjects over needed 450 KB more
        grow(small, f"{4 * (high + 8)}k")
        rerun = _invoke(prepared, out, params, work)
        assert rerun.exit_code == 0, rerun.output
        _same_content(out, reference)


def test_a_half_written_subject_whose_crops_changed_is_packed_again(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from PIL import Image

    root, prepared, params = setup
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    caplog.set_level(logging.INFO, logger="pipeline.data.pack_frames")
    _refuse_room_after(monkeypatch, grants=4)  # vidA, then vidB's frames 0..3
    assert _invoke(prepared, out, params, work).exit_code == 1
    monkeypatch.undo()
    crop = root / "cropped_aligned/vidB/00002.jpg"
    with Image.open(crop) as image:
        image.rotate(90).save(crop, quality=40)  # one of the frames already written changed
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    assert "vidB: resuming" not in caplog.text
    assert bytes(FrameStore(out).read_jpeg("vidB", [1])[0]) == crop.read_bytes()


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
    assert sorted(p.name for p in work.iterdir()) == [".lock"]   # the seal and its stamps went with the store


def test_a_half_written_subject_is_not_resumed_after_a_checkout_of_same_size_crops(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The crops a half-written subject already holds are stamped chunk by chunk: one rewritten at
    the same size (as `dvc checkout` does) makes the rerun pack the subject again."""
    import os

    from PIL import Image

    root, prepared, params = setup
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    crop = root / "cropped_aligned/vidB/00002.jpg"
    with Image.open(crop) as image:
        pixels = image.copy()
    pixels.save(crop, quality=90, comment=b"draw 1")
    caplog.set_level(logging.INFO, logger="pipeline.data.pack_frames")
    _refuse_room_after(monkeypatch, grants=4)  # vidA, then vidB's frames 0..3
    assert _invoke(prepared, out, params, work).exit_code == 1
    monkeypatch.undo()
    size, mtime = crop.stat().st_size, crop.stat().st_mtime_ns
    pixels.save(crop, quality=90, comment=b"draw 2")  # frame 1, already written: other bytes, same size
    os.utime(crop, ns=(mtime + 10**9, mtime + 10**9))
    assert crop.stat().st_size == size
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.output[rerun.output.index("{"):])["resumed_subjects"] == 1  # vidA
    assert "vidB: resuming" not in caplog.text
    assert bytes(FrameStore(out).read_jpeg("vidB", [1])[0]) == crop.read_bytes()


def test_crops_gone_are_counted_once_across_a_resumed_subject(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With on_corrupt: drop, a crop gone in the frames written before a full disk and one gone in the
    frames written after it are each dropped once, and the subject is resumed in place."""
    root, prepared, params = setup
    params.write_text(PARAMS.replace("on_corrupt: error", "on_corrupt: drop"))
    for frame in (2, 7):  # vidB's first chunk (written before the full disk) and its second
        (root / f"cropped_aligned/vidB/{frame:05d}.jpg").unlink()
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    caplog.set_level(logging.INFO, logger="pipeline.data.pack_frames")
    _refuse_room_after(monkeypatch, grants=4)  # vidA, then vidB's frames 0..3
    assert _invoke(prepared, out, params, work).exit_code == 1
    monkeypatch.undo()
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    assert caplog.messages.count("vidB: resuming at frame 4 of 12") == 1
    assert json.loads(rerun.output[rerun.output.index("{"):])["dropped"] == 2
    assert not FrameStore(out).face_present("vidB")[[1, 6]].any()


def test_a_seal_that_cannot_be_written_is_one_warning_and_the_rerun_starts_over(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The seal (with the crop stamps) is written after a full disk stopped the run: when the disk
    refuses it too, the run still ends in its one error line, and the rerun packs everything again."""
    import pipeline.data.partial_store as partial_store

    _, prepared, params = setup
    reference = tmp_path / "reference.h5"
    assert _invoke(prepared, reference, params, tmp_path / "reference-work").exit_code == 0
    work, out = tmp_path / "work", tmp_path / "frames.h5"

    def full(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    _refuse_room_after(monkeypatch, grants=4)
    monkeypatch.setattr(partial_store, "write_json", full)
    failed = _invoke(prepared, out, params, work)
    monkeypatch.undo()
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert [line for line in failed.output.splitlines() if line.startswith("Error: ")] == [
        f"Error: {work / 'frames.h5.partial'}: no space left on device; free some space "
        "(or point the output elsewhere) and rerun"]
    assert any("could not seal the partial store" in m for m in caplog.messages)
    assert not (work / "frames.h5.partial.sealed").exists()
    rerun = _invoke(prepared, out, params, work)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.output[rerun.output.index("{"):])["resumed_subjects"] == 0
    _same_content(out, reference)
