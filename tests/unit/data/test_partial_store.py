"""The partial frame store: reopened only when sealed by a clean close, written only into reserved room."""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path

import pytest

import pipeline.data.partial_store as partial_store
from pipeline.data.partial_store import PartialStore, seal_path
from pipeline.fsio import DiskFullError


def _sealed_store(path: Path, fingerprint: str = "a") -> None:
    store = PartialStore.open(path, fingerprint, resumable=True)
    with store.writing() as fh:
        fh.require_group("subjects/vidA")
    store.close(failing=False)


def test_a_sealed_store_is_reopened_with_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "frames.h5.partial"
    _sealed_store(path)
    store = PartialStore.open(path, "a", resumable=True)
    assert store.resumed and "vidA" in store.fh["subjects"]
    assert not seal_path(path).exists()  # being written again: no longer sealed
    store.close(failing=False)


def test_the_crop_stamps_are_kept_in_the_seal(tmp_path: Path) -> None:
    path = tmp_path / "frames.h5.partial"
    store = PartialStore.open(path, "a", resumable=True)
    store.stamps.update({"vidA": "1f", "vidB": "2e"})
    store.close(failing=False)
    again = PartialStore.open(path, "a", resumable=True)
    assert again.resumed and again.stamps == {"vidA": "1f", "vidB": "2e"}
    again.close(failing=False)


def test_a_seal_that_cannot_be_written_leaves_the_store_whole_and_unsealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "frames.h5.partial"
    store = PartialStore.open(path, "a", resumable=True)

    def full(target: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(partial_store, "write_json", full)
    store.close(failing=False)  # a complete store is still published: the seal only serves a rerun
    monkeypatch.undo()
    assert path.is_file() and not seal_path(path).exists()
    reopened = PartialStore.open(path, "a", resumable=True)
    assert not reopened.resumed
    reopened.close(failing=False)


@pytest.mark.parametrize("change", ["appended", "other config", "seal without stamps", "no seal"])
def test_a_store_its_seal_does_not_describe_is_started_over(tmp_path: Path, change: str) -> None:
    path = tmp_path / "frames.h5.partial"
    _sealed_store(path)
    fingerprint = "a"
    if change == "appended":
        with path.open("ab") as fh:
            fh.write(b"\0" * 8)
    elif change == "other config":
        fingerprint = "b"
    elif change == "seal without stamps":
        mark = json.loads(seal_path(path).read_text())
        del mark["stamps"]
        seal_path(path).write_text(json.dumps(mark))
    else:
        seal_path(path).unlink()
    store = PartialStore.open(path, fingerprint, resumable=True)
    assert not store.resumed and "subjects" not in store.fh
    store.close(failing=False)


def test_a_store_whose_write_failed_is_not_sealed(tmp_path: Path) -> None:
    path = tmp_path / "frames.h5.partial"
    store = PartialStore.open(path, "a", resumable=True)
    with pytest.raises(OSError), store.writing():
        raise OSError(errno.ENOSPC, "No space left on device")
    store.close(failing=True)
    assert store.damaged and path.is_file() and not seal_path(path).exists()


def test_reserve_refuses_a_full_disk_and_falls_back_to_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "frames.h5.partial"
    store = PartialStore.open(path, "a", resumable=True)
    store.reserve(1 << 16)
    assert os.stat(path).st_blocks * 512 >= 1 << 16  # allocated past the end, size unchanged

    def refuse(code: int):
        def fallocate(*args: int) -> int:
            ctypes.set_errno(code)
            return -1
        return fallocate

    monkeypatch.setattr(partial_store, "_fallocate", refuse(errno.ENOSPC))
    with pytest.raises(DiskFullError, match="frames.h5.partial: no space left on device"):
        store.reserve(1)
    monkeypatch.setattr(partial_store, "_fallocate", refuse(errno.EOPNOTSUPP))
    store.reserve(1)  # cannot preallocate here; the free space suffices
    monkeypatch.setattr(partial_store.os, "statvfs", lambda _: os.statvfs_result((4096,) * 2 + (0,) * 8))
    with pytest.raises(DiskFullError):
        store.reserve(1)
    monkeypatch.undo()
    store.close(failing=False)
    assert os.stat(path).st_blocks * 512 < 1 << 16  # the reservation past the end is given back
