"""Pack every subject's face crops into the HDF5 frame store (format: :mod:`pipeline.data.frame_store`).

``pack_frames`` streams one chunk of crops at a time, checks that each decodes, and works in a
partial file that is renamed onto the output only when complete. With a ``work_dir`` the partial
file survives a failure: when the run closed it cleanly (a corrupt crop, a full disk caught before
HDF5 wrote onto it, an interrupt) the next run resumes in place, after the last chunk written;
otherwise (a kill, a write that failed inside HDF5) it is deleted unopened and everything is packed
again (see :mod:`pipeline.data.partial_store` for why).

Example (not run here: it needs the pipeline's prepared manifest and crops)::

    stats = pack_frames(read_manifest("cache/prepared/manifest.json"), "cache/frames/frames.h5",
                        PackConfig())
    store = FrameStore("cache/frames/frames.h5")
    store.read("video5_left", [0, 7, 3]).shape
    # (3, 112, 112, 3)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from h5py import h5s, h5t
from tqdm import tqdm

from pipeline import config
from pipeline.data.crops import crop_paths
from pipeline.data.frame_store import IMAGE_SIZE, JPEG_DTYPE, CorruptCropError
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.data.partial_store import PartialStore, seal_path
from pipeline.fsio import publish, remove_dead_temporaries
from pipeline.jpeg import ImageError, check_jpeg

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.uint8)
_METADATA_ROOM = 64 << 10  # heap collection, chunk index and attribute blocks


@dataclass(frozen=True)
class PackConfig:
    """The ``pack_frames`` params section."""

    verify: Literal["decode", "header", "none"] = "decode"  # how each JPEG is checked before storing
    on_corrupt: Literal["error", "drop"] = "error"  # "drop" stores the frame as face-absent and counts it
    chunk_frames: int = 256  # crops read per batch; also the HDF5 chunk length

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise config.ConfigError(f"must be >= 1, got {self.chunk_frames}", key="chunk_frames")


@dataclass(frozen=True)
class _Crop:
    data: np.ndarray  # uint8 JPEG bytes, empty when absent
    present: bool
    dropped: bool = False
    resized: bool = False  # not 112x112 (only known when verified)


def pack_frames(
    manifest: Manifest,
    out_path: str | Path,
    cfg: PackConfig,
    work_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Pack every manifest subject's crops into ``out_path``; return size and speed statistics."""
    out_path = Path(out_path)
    started = time.perf_counter()
    resumable = work_dir is not None
    partial = Path(work_dir) / f"{out_path.name}.partial" if resumable else out_path.with_name(
        f".{out_path.name}.partial-{os.getpid()}"
    )
    fingerprint = json.dumps(config.to_dict(cfg), sort_keys=True)
    for kind in ("partial", "staged"):  # what killed runs of this stage left next to the output
        remove_dead_temporaries(out_path.parent, f".{out_path.name}.{kind}-")
    store = PartialStore.open(partial, fingerprint, resumable)
    totals = {"frames": 0, "faces": 0, "source_bytes": 0, "dropped": 0, "resized": 0, "resumed_subjects": 0}
    finished = False
    try:
        with store.writing() as fh:
            subjects = fh.require_group("subjects")
            wanted = set(manifest.names())
            for stale in [name for name in subjects if name not in wanted]:
                del subjects[stale]
        total = sum(r.n_frames for r in manifest.subjects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
            total=total, desc="pack-frames", unit="frame", disable=not progress
        ) as bar:
            for record in manifest.subjects:
                if _is_done(subjects, record):
                    totals["resumed_subjects"] += 1
                    bar.update(record.n_frames)
                else:
                    _pack_subject(store, subjects, record, cfg, pool, bar)
                attrs = subjects[record.name].attrs
                for key in ("frames", "faces", "source_bytes", "dropped", "resized"):
                    totals[key] += int(attrs[key])
        with store.writing() as fh:
            fh.attrs["n_subjects"] = len(manifest.subjects)
            fh.attrs["complete"] = True
        finished = True
    finally:
        store.close(failing=not finished)
        if not finished and not resumable:
            partial.unlink(missing_ok=True)
    _publish(partial, out_path)
    seal_path(partial).unlink(missing_ok=True)  # it sealed a file that is now the output
    seconds = time.perf_counter() - started
    store_bytes = out_path.stat().st_size
    return {
        "subjects": len(manifest.subjects),
        **totals,
        "store_bytes": store_bytes,
        "ratio": store_bytes / totals["source_bytes"] if totals["source_bytes"] else None,
        "seconds": seconds,
        "frames_per_s": totals["frames"] / seconds if seconds > 0 else None,
    }


def _is_done(subjects: h5py.Group, record: SubjectRecord) -> bool:
    """Whether ``record`` was completely packed by an earlier run from the same crops.

    Same folder, same frame count and the same total crop size: a partial store that outlived its
    inputs (a failed run, then a DVC checkout of other data in the same layout) is not reused for
    crops that have since changed. A subject whose corrupt crops were dropped stores fewer bytes than
    its files hold, so it is packed again.
    """
    if record.name not in subjects:
        return False
    attrs = subjects[record.name].attrs
    return (
        bool(attrs.get("complete", False))
        and int(attrs.get("frames", -1)) == record.n_frames
        and attrs.get("crops_dir") == (record.crops_dir or "")
        and int(attrs.get("source_bytes", -1)) == _crop_bytes(crop_paths(record))
    )


def _crop_bytes(paths: list[Path]) -> int:
    """Total size of the crop files ``paths`` on disk (missing crops count 0)."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # a frame without a crop: stored as face-absent
    return total


def _pack_subject(
    store: PartialStore, subjects: h5py.Group, record: SubjectRecord, cfg: PackConfig, pool: Executor, bar: tqdm
) -> None:
    """Write one subject's crops chunk by chunk, continuing after the frames an earlier run wrote;
    mark its group complete last.

    Each chunk's room is reserved before HDF5 writes it, and the file is flushed after it, so a full
    disk stops the run between chunks with everything written so far on disk and accounted for in
    the group's attrs (``written`` frames and the counters).
    """
    paths = crop_paths(record)
    n = len(paths)
    group = _subject_group(store, subjects, record, paths, cfg)
    first = int(group.attrs["written"])
    bar.update(first)
    for start in range(first, n, cfg.chunk_frames):
        stop = min(n, start + cfg.chunk_frames)
        crops = list(pool.map(lambda i: _load_crop(paths[i], i, record.name, cfg), range(start, stop)))
        data = [crop.data for crop in crops]
        store.reserve(_room_for(data))
        with store.writing() as fh:
            _write_vlen(group["jpeg"], start, data)
            group["face_present"][start:stop] = [crop.present for crop in crops]
            counts = {"faces": sum(c.present for c in crops), "source_bytes": sum(c.data.size for c in crops),
                      "dropped": sum(c.dropped for c in crops), "resized": sum(c.resized for c in crops)}
            for key, value in counts.items():
                group.attrs[key] = int(group.attrs[key]) + value
            group.attrs["written"] = stop
            fh.flush()
        bar.update(stop - start)
    with store.writing():
        group.attrs["complete"] = True


def _subject_group(
    store: PartialStore, subjects: h5py.Group, record: SubjectRecord, paths: list[Path], cfg: PackConfig
) -> h5py.Group:
    """The group to pack ``record`` into: the one an earlier run left half-written when it was made
    from the same crops (its ``written`` frames are kept), else a new, empty one."""
    n = len(paths)
    if record.name in subjects:
        attrs = subjects[record.name].attrs
        written = int(attrs.get("written", -1))
        if (
            int(attrs.get("frames", -1)) == n
            and attrs.get("crops_dir") == (record.crops_dir or "")
            and not attrs.get("complete", False)
            and 0 <= written <= n
            and int(attrs.get("source_bytes", -1)) == _crop_bytes(paths[:written])
        ):
            log.info("%s: resuming at frame %d of %d", record.name, written, n)
            return subjects[record.name]
        # the space its JPEG bytes take is not reused (HDF5 does not free variable-length data)
        with store.writing():
            del subjects[record.name]
    with store.writing():
        group = subjects.create_group(record.name)
        group.create_dataset(
            "jpeg", shape=(n,), dtype=JPEG_DTYPE, chunks=(min(n, cfg.chunk_frames),) if n else None
        )
        group.create_dataset("face_present", shape=(n,), dtype=bool)
        group.attrs.update({
            "frames": n, "written": 0, "faces": 0, "source_bytes": 0, "dropped": 0, "resized": 0,
            "crops_dir": record.crops_dir or "", "source": record.source, "complete": False,
        })
    return group


def _room_for(arrays: list[np.ndarray]) -> int:
    """A bound on what writing ``arrays`` as one chunk adds to the file: each JPEG in HDF5's global
    heap (a 16-byte header, 8-byte aligned) and its 16-byte reference in the chunk, plus room for the
    heap collection, chunk index and attribute blocks HDF5 allocates alongside (it allocates small
    metadata in 2 KiB blocks and heap collections of at least 4 KiB)."""
    return sum(array.size + 48 for array in arrays) + _METADATA_ROOM


def _write_vlen(dataset: h5py.Dataset, start: int, arrays: list[np.ndarray]) -> None:
    """Write uint8 arrays into ``dataset[start:start+len(arrays)]``.

    Goes through the low-level API: ``dataset[a:b] = object_array`` turns equal-length arrays into
    a 2-D block and fails.
    """
    batch = np.empty(len(arrays), dtype=object)
    for k, array in enumerate(arrays):
        batch[k] = array
    memory = h5s.create_simple((len(arrays),))
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start,), (len(arrays),))
    dataset.id.write(memory, file_space, batch, mtype=h5t.py_create(JPEG_DTYPE))


def _load_crop(path: Path, frame: int, name: str, cfg: PackConfig) -> _Crop:
    """Read one crop's bytes and check them as ``cfg.verify`` says."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Crop(_EMPTY, present=False)
    resized = False
    # An empty file is never a face: it is checked (and dropped or refused) even with verify: none.
    if cfg.verify != "none" or not data:
        try:
            size = check_jpeg(data, decode=cfg.verify == "decode")
        except ImageError as exc:
            message = f"{path}: frame {frame} of subject {name!r}: corrupt JPEG crop ({exc})"
            if cfg.on_corrupt == "error":
                raise CorruptCropError(message) from exc
            log.warning("dropped %s", message)
            return _Crop(_EMPTY, present=False, dropped=True)
        resized = size != (IMAGE_SIZE, IMAGE_SIZE)
    return _Crop(np.frombuffer(data, dtype=np.uint8), present=True, resized=resized)


def _publish(partial: Path, out_path: Path) -> None:
    """Rename the finished partial store onto ``out_path`` (copying first across filesystems)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        publish(partial, out_path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        staged = out_path.with_name(f".{out_path.name}.staged-{os.getpid()}")
        try:
            shutil.copyfile(partial, staged)
            publish(staged, out_path)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        partial.unlink()
