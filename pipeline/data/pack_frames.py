"""Pack every subject's face crops into the HDF5 frame store (format: :mod:`pipeline.storage.frame_store`).

``pack_frames`` streams one chunk of crops at a time, checks that each decodes, and works in a
partial file that is renamed onto the output only when complete. With a ``work_dir`` the partial
file survives a failure: when the run closed it cleanly (a corrupt crop, a full disk caught before
HDF5 wrote onto it, an interrupt) the next run resumes in place, after the last chunk written;
otherwise (a kill, a write that failed inside HDF5) it is deleted unopened and everything is packed
again (see :mod:`pipeline.data.partial_store` for why). A subject in it, complete or half-written, is
kept only while the crops written into it are the same files (:mod:`pipeline.data.crop_stamps`).

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
import shutil
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import h5py
import numpy as np
from h5py import h5s, h5t
from tqdm import tqdm

from pipeline import config
from pipeline.data.crop_stamps import CropStamp
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.faults import join_faults
from pipeline.storage.frame_store import IMAGE_SIZE, JPEG_DTYPE, CorruptCropError
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.data.partial_store import PartialStore, seal_path
from pipeline.fsio import make_temporary_dir, publish, remove_dead_temporaries
from pipeline.jpeg import ImageError, check_jpeg

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.uint8)
_METADATA_ROOM = 64 << 10  # heap collection, chunk index and attribute blocks


class MissingCropError(FileNotFoundError):
    """Face crops that prepare found (labels.h5's face_present) are gone; the message names them."""


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
    face_present: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Pack every manifest subject's crops into ``out_path``; return size and speed statistics.

    ``face_present`` (subject -> (N,) bool, prepare's ``labels.h5``) says which crops prepare found:
    one that is gone since is a :class:`MissingCropError` naming them all before anything is packed,
    or with ``on_corrupt: drop`` a face-absent frame counted in ``dropped``, as a corrupt crop is.
    """
    out_path = Path(out_path)
    started = time.perf_counter()
    gone = _check_gone_crops(manifest, face_present or {}, cfg)
    resumable = work_dir is not None
    fingerprint = json.dumps(config.to_dict(cfg), sort_keys=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("partial", "staged"):  # what killed runs of this stage left next to the output
        remove_dead_temporaries(out_path.parent, f".{out_path.name}.{kind}-")
    # without a work dir the store is built in a private, unpredictably named folder beside the output
    holder = None if resumable else make_temporary_dir(out_path.parent, f".{out_path.name}.partial-")
    partial = Path(work_dir) / f"{out_path.name}.partial" if holder is None else holder / f"{out_path.name}.partial"
    store = PartialStore.open(partial, fingerprint, resumable)
    totals = {"frames": 0, "faces": 0, "source_bytes": 0, "dropped": 0, "resized": 0, "resumed_subjects": 0}
    finished = False
    try:
        with store.writing() as fh:
            subjects = fh.require_group("subjects")
            wanted = set(manifest.names())
            for stale in [name for name in subjects if name not in wanted]:
                del subjects[stale]
                store.stamps.pop(stale, None)
        total = sum(r.n_frames for r in manifest.subjects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
            total=total, desc="pack-frames", unit="frame", disable=not progress
        ) as bar:
            for record in manifest.subjects:
                if _is_done(store, subjects, record):
                    totals["resumed_subjects"] += 1
                    bar.update(record.n_frames)
                else:
                    _pack_subject(store, subjects, record, cfg, pool, bar, gone.get(record.name, frozenset()))
                attrs = subjects[record.name].attrs
                for key in ("frames", "faces", "source_bytes", "dropped", "resized"):
                    totals[key] += int(attrs[key])
        with store.writing() as fh:
            fh.attrs["n_subjects"] = len(manifest.subjects)
            fh.attrs["complete"] = True
        finished = True
    finally:
        store.close(failing=not finished)
        if not finished and holder is not None:
            shutil.rmtree(holder, ignore_errors=True)
    try:
        _publish(partial, out_path)
        seal_path(partial).unlink(missing_ok=True)  # it sealed a file that is now the output
    finally:
        if holder is not None:
            shutil.rmtree(holder, ignore_errors=True)
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


def _is_done(store: PartialStore, subjects: h5py.Group, record: SubjectRecord) -> bool:
    """Whether ``record`` was completely packed by an earlier run from the same crop files.

    Same folder, same frame count and the same stamp (each crop's name, size and mtime): a partial
    store that outlived its inputs (a failed run, then a DVC checkout of other data in the same
    layout, which rewrites every crop it changes even at the same size) is not reused for them.
    """
    if record.name not in subjects:
        return False
    attrs = subjects[record.name].attrs
    return (
        bool(attrs.get("complete", False))
        and int(attrs.get("frames", -1)) == record.n_frames
        and attrs.get("crops_dir") == (record.crops_dir or "")
        and store.stamps.get(record.name) == CropStamp().add(crop_paths(record)).hexdigest()
    )


def _check_gone_crops(manifest: Manifest, face_present: Mapping[str, np.ndarray],
                      cfg: PackConfig) -> dict[str, frozenset[int]]:
    """The frames whose crops prepare found and that are gone (:func:`_gone_crops`): with
    ``on_corrupt: error`` a :class:`MissingCropError` naming them, else a warning per subject (they
    are counted as dropped)."""
    gone = _gone_crops(manifest, face_present)
    if gone and cfg.on_corrupt == "error":
        faults = [f"{path} (frame {frame} of {name!r})" for name, crops in gone.items() for frame, path in crops]
        raise MissingCropError(f"{len(faults)} face crop(s) that prepare found are missing: "
                               f"{join_faults(faults, 'missing crops')}; run prepare again, or set "
                               "pack_frames.on_corrupt: drop to store them as face-absent")
    for name, crops in gone.items():
        log.warning("%s: %d face crop(s) that prepare found are missing (first: %s); stored as face-absent and "
                    "counted as dropped", name, len(crops), crops[0][1])
    return {name: frozenset(frame for frame, _ in crops) for name, crops in gone.items()}


def _gone_crops(manifest: Manifest, face_present: Mapping[str, np.ndarray]) -> dict[str, list[tuple[int, Path]]]:
    """``{subject: [(frame, crop path)]}`` of the crops ``face_present`` (prepare's) has that are gone now."""
    gone = {}
    for record in manifest.subjects:
        expected = face_present.get(record.name)
        if expected is None or not expected.any():
            continue
        paths = crop_paths(record)
        if len(expected) != len(paths):
            raise ValueError(f"{record.name}: labels.h5 has {len(expected)} frames but the manifest {len(paths)}; "
                             "run prepare again")
        lost = np.flatnonzero(expected & ~present_mask(paths))
        if len(lost):
            gone[record.name] = [(int(i), paths[i]) for i in lost]
    return gone


def _pack_subject(
    store: PartialStore, subjects: h5py.Group, record: SubjectRecord, cfg: PackConfig, pool: Executor, bar: tqdm,
    gone: frozenset[int],
) -> None:
    """Write one subject's crops chunk by chunk, continuing after the frames an earlier run wrote;
    mark its group complete last. ``gone``: frames whose crops prepare found and that are missing
    now, counted as dropped.

    Each chunk's room is reserved before HDF5 writes it, and the file is flushed after it, so a full
    disk stops the run between chunks with everything written so far on disk and accounted for in
    the group's attrs (``written`` frames and the counters) and in the store's crop stamps.
    """
    paths = crop_paths(record)
    n = len(paths)
    group, stamp = _subject_group(store, subjects, record, paths, cfg)
    first = int(group.attrs["written"])
    bar.update(first)
    for start in range(first, n, cfg.chunk_frames):
        stop = min(n, start + cfg.chunk_frames)
        stamp.add(paths[start:stop])  # before the reads: a crop rewritten meanwhile shows a new stamp
        crops = list(pool.map(lambda i: _load_crop(paths[i], i, record.name, cfg), range(start, stop)))
        data = [crop.data for crop in crops]
        lost = sum(1 for i, crop in zip(range(start, stop), crops) if i in gone and not crop.present)
        store.reserve(_room_for(data))
        with store.writing() as fh:
            _write_vlen(group["jpeg"], start, data)
            group["face_present"][start:stop] = [crop.present for crop in crops]
            counts = {"faces": sum(c.present for c in crops), "source_bytes": sum(c.data.size for c in crops),
                      "dropped": sum(c.dropped for c in crops) + lost, "resized": sum(c.resized for c in crops)}
            for key, value in counts.items():
                group.attrs[key] = int(group.attrs[key]) + value
            group.attrs["written"] = stop
            fh.flush()
        store.stamps[record.name] = stamp.hexdigest()  # in step with ``written``: the seal saves both
        bar.update(stop - start)
    with store.writing():
        group.attrs["complete"] = True


def _subject_group(
    store: PartialStore, subjects: h5py.Group, record: SubjectRecord, paths: list[Path], cfg: PackConfig
) -> tuple[h5py.Group, CropStamp]:
    """The group to pack ``record`` into and the stamp of the crops already in it: the group an
    earlier run left half-written when the crops it holds are the same files (its ``written`` frames
    are kept), else a new, empty one."""
    n = len(paths)
    if record.name in subjects:
        attrs = subjects[record.name].attrs
        written = int(attrs.get("written", -1))
        if (
            int(attrs.get("frames", -1)) == n
            and attrs.get("crops_dir") == (record.crops_dir or "")
            and not attrs.get("complete", False)
            and 0 <= written <= n
        ):
            stamp = CropStamp().add(paths[:written])
            if store.stamps.get(record.name) == stamp.hexdigest():
                log.info("%s: resuming at frame %d of %d", record.name, written, n)
                return subjects[record.name], stamp
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
    stamp = CropStamp()
    store.stamps[record.name] = stamp.hexdigest()  # no crops written yet
    return group, stamp


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
        holder = make_temporary_dir(out_path.parent, f".{out_path.name}.staged-")
        try:
            shutil.copyfile(partial, holder / out_path.name)
            publish(holder / out_path.name, out_path)
        finally:
            shutil.rmtree(holder, ignore_errors=True)
        partial.unlink()
