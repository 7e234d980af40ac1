"""Atomic publication: a failure leaves the target untouched, success replaces it whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.fsio import atomic_path, write_json


def test_directory_is_published_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pipeline.fsio import WorkDirBusy, work_dir_lock

    work = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pipeline.fsio import work_dir_lock\n"
         f"with work_dir_lock({str(work)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkDirBusy, match=rf"another run holds {work} \(pid {holder.pid}\)"):
            with work_dir_lock(work):
                pass
    finally:
        holder.communicate("")
    with work_dir_lock(work):  # released when the holder exited
        assert (work / ".lock").read_text().strip() == str(os.getpid())


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pipeline.fsio import remove_dead_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".syn.tmp-{dead_pid}").mkdir()
    (tmp_path / f".syn.tmp-{dead_pid}" / "video.mp4").write_bytes(b"x")
    (tmp_path / f".syn.tmp-{os.getpid()}").mkdir()           # this process: alive
    (tmp_path / f".other.tmp-{dead_pid}").write_text("x")   # another prefix: not ours to judge
    (tmp_path / ".syn.tmp-notapid").write_text("x")
    removed = remove_dead_temporaries(tmp_path, ".syn.tmp-")
    assert [p.name for p in removed] == [f".syn.tmp-{dead_pid}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".syn.tmp-{os.getpid()}", f".other.tmp-{dead_pid}", ".syn.tmp-notapid"]
    )


def test_atomic_path_clears_what_a_killed_writer_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import os\nfrom pipeline.fsio import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'syn')!r}) as tmp:\n"
            "    tmp.mkdir(); (tmp / 'half.jpg').write_bytes(b'x'); os._exit(9)")
    killed = subprocess.Popen([sys.executable, "-c", code])
    assert killed.wait() == 9
    assert [p.name for p in tmp_path.iterdir()] == [f".syn.tmp-{killed.pid}"]
    with atomic_path(tmp_path / "syn") as tmp:
        tmp.mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]


def test_disk_full_errors_are_recognised_with_their_path() -> None:
    import errno

    from pipeline.fsio import disk_full_path

    plain = OSError(errno.ENOSPC, "No space left on device", "/data/out.bin")
    assert disk_full_path(plain) == "/data/out.bin"
    hdf5 = OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: filename = '/w/frames.h5', "
                                 "file descriptor = 3, errno = 28, error message = 'No space left on device')")
    assert disk_full_path(hdf5) == "/w/frames.h5"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as wrapped:  # how torch.save reports it
        assert disk_full_path(wrapped) == ""
    assert disk_full_path(OSError(errno.EACCES, "Permission denied", "/x")) is None
    assert disk_full_path(ValueError("bad")) is None


def test_a_checkpoint_onto_a_full_disk_names_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import torch
    from _fs import small_filesystem

    from pipeline.fsio import DiskFullError
    from pipeline.model_files.checkpoint import save_checkpoint

    with small_filesystem(tmp_path / "small", "64k") as mounted:
        if not mounted:
            def full(*args: object, **kwargs: object) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(torch, "save", full)
        target = tmp_path / "small" / "state.pt"
        with pytest.raises(DiskFullError) as info:
            save_checkpoint(target, {"w": torch.zeros(100_000)})
        assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
        assert list((tmp_path / "small").iterdir()) == []  # the partial temporary is gone
