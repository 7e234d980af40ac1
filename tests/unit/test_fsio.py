"""Atomic publication: a failure leaves the target untouched, success replaces it whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.fsio import OUTPUT_MARKER, ForeignOutputError, atomic_path, write_json


def _publish_dir(target: Path, name: str) -> None:
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / name).write_text(name)


def test_directory_is_published_whole_over_an_earlier_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _publish_dir(target, "old.txt")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_the_project_did_not_write_is_refused_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ForeignOutputError) as info:
        _publish_dir(target, "plots.png")
    message = str(info.value)
    assert message.startswith(f"{target}: exists, is not empty and was not written by mmaffect") and "\n" not in message
    assert (target / "notes.txt").read_text() == "mine" and sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary left


def test_an_empty_folder_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _publish_dir(tmp_path / "d", "a.txt")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [OUTPUT_MARKER, "a.txt"]


def test_a_file_output_replaces_only_that_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    write_json(tmp_path / "m.json", {"a": 1})
    write_json(tmp_path / "m.json", {"a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "notes.txt"]


def test_temporaries_are_fresh_private_and_name_host_and_pid(tmp_path: Path) -> None:
    from pipeline.fsio import HOST

    seen = []
    for _ in range(2):
        with atomic_path(tmp_path / "out.bin") as tmp:
            holder = tmp.parent
            seen.append(holder.name)
            assert holder.parent == tmp_path and holder.name.startswith(f".out.bin.tmp-{HOST}-{os.getpid()}-")
            assert holder.stat().st_mode & 0o777 == 0o700
            tmp.write_bytes(b"x")
    assert seen[0] != seen[1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_planted_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    # the name the writer used to pick: a link there once redirected its write
    (tmp_path / f".out.bin.tmp-{os.getpid()}").symlink_to(victim)
    with atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"new")
    assert victim.read_text() == "keep" and (tmp_path / "out.bin").read_bytes() == b"new"


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    from pipeline.fsio import work_dir_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match=rf"^{work / '.lock'}: is a symbolic link"):
        with work_dir_lock(work):
            pass
    assert victim.read_text() == "keep"


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
    from pipeline.fsio import HOST

    (tmp_path / f".syn.tmp-{HOST}-{dead_pid}-ab12cd_3").mkdir()   # this host, dead
    (tmp_path / f".syn.tmp-{HOST}-{os.getpid()}-x9y8z7w6").mkdir()  # this host, alive
    (tmp_path / f".syn.tmp-{HOST}-{os.getpid()}-12345678").mkdir()  # alive, a random part of digits
    (tmp_path / f".syn.tmp-node7.other-{dead_pid}-ab12cd_3").mkdir()  # another host: its writer may run
    removed = remove_dead_temporaries(tmp_path, ".syn.tmp-")
    assert sorted(p.name for p in removed) == sorted([f".syn.tmp-{dead_pid}", f".syn.tmp-{HOST}-{dead_pid}-ab12cd_3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".syn.tmp-{os.getpid()}", f".other.tmp-{dead_pid}", ".syn.tmp-notapid",
         f".syn.tmp-{HOST}-{os.getpid()}-x9y8z7w6", f".syn.tmp-{HOST}-{os.getpid()}-12345678",
         f".syn.tmp-node7.other-{dead_pid}-ab12cd_3"]
    )


def test_atomic_path_clears_what_a_killed_writer_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import os\nfrom pipeline.fsio import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'syn')!r}) as tmp:\n"
            "    tmp.mkdir(); (tmp / 'half.jpg').write_bytes(b'x'); os._exit(9)")
    killed = subprocess.Popen([sys.executable, "-c", code])
    assert killed.wait() == 9
    from pipeline.fsio import HOST

    [left] = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(f".syn.tmp-{HOST}-{killed.pid}-")
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


def test_a_failed_rename_puts_the_earlier_output_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.fsio as fsio

    target = tmp_path / "out"
    _publish_dir(target, "old.txt")
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(str(src)).parent.name.startswith(".out.tmp-") and Path(str(dst)) == target:  # the new one
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(fsio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        _publish_dir(target, "new.txt")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
