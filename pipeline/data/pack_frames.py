"""Pack every subject's face crops into the HDF5 frame store (format: :mod:`pipeline.data.frame_store`).

``pack_frames`` streams one chunk of crops at a time, checks that each decodes, and works in a
partial file that is renamed onto the output only when complete; with a ``work_dir`` the partial
file survives a failure and the next run resumes after the last complete subject that still reads
back (a full disk or a kill can leave the rest of the file unusable).

Example (not run here: it needs the pipeline's prepared manifest and crops)::

    stats = pack_frames(read_manifest("cache/prepared/manifest.json"), "cache/frames/frames.h5",
                        PackConfig())
    store = FrameStore("cache/frames/frames.h5")
    store.read("video5_left", [0, 7, 3]).shape
    # (3, 112, 112, 3)
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import h5py
import numpy as np
from h5py import h5s, h5t
from PIL import Image
from tqdm import tqdm

from pipeline import config
from pipeline.data.crop_stamps import CropStamps, crop_stamp
from pipeline.data.crops import crop_paths, present_mask
from pipeline.data.faults import join_faults
from pipeline.data.frame_store import DECODE_ERRORS, IMAGE_SIZE, JPEG_DTYPE, STORE_VERSION, CorruptCropError
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.fsio import publish, remove_dead_temporaries

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.uint8)



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
    partial = Path(work_dir) / f"{out_path.name}.partial" if resumable else out_path.with_name(
        f".{out_path.name}.partial-{os.getpid()}"
    )
    # what the crops of each packed subject looked like; a subject is resumed only from the same crops
    stamps = CropStamps(partial.with_name(f"{partial.name}.stamps.json")) if resumable else None
    fingerprint = json.dumps(config.to_dict(cfg), sort_keys=True)
    for kind in ("partial", "staged"):  # what killed runs of this stage left next to the output
        remove_dead_temporaries(out_path.parent, f".{out_path.name}.{kind}-")
    fh = _open_partial(partial, fingerprint, resumable)
    totals = {"frames": 0, "faces": 0, "source_bytes": 0, "dropped": 0, "resized": 0, "resumed_subjects": 0}
    finished = False
    try:
        subjects = fh.require_group("subjects")
        wanted = set(manifest.names())
        for stale in [name for name in subjects if name not in wanted]:
            del subjects[stale]
        total = sum(r.n_frames for r in manifest.subjects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
            total=total, desc="pack-frames", unit="frame", disable=not progress
        ) as bar:
            for record in manifest.subjects:
                stamp = crop_stamp(crop_paths(record)) if stamps is not None else ""
                if stamps is not None and _is_done(subjects, record) and stamps.matches(record.name, stamp):
                    totals["resumed_subjects"] += 1
                    bar.update(record.n_frames)
                else:
                    if record.name in subjects:
                        del subjects[record.name]
                    if stamps is not None:
                        # before the subject: a stamp only counts for a subject the store marks complete
                        stamps.record(record.name, stamp)
                    _pack_subject(subjects, record, cfg, pool, bar, gone=len(gone.get(record.name, ())))
                    fh.flush()
                attrs = subjects[record.name].attrs
                for key in ("frames", "faces", "source_bytes", "dropped", "resized"):
                    totals[key] += int(attrs[key])
        fh.attrs["n_subjects"] = len(manifest.subjects)
        fh.attrs["complete"] = True
        finished = True
    finally:
        _close(fh, failing=not finished)
        if not finished and not resumable:
            partial.unlink(missing_ok=True)
    _publish(partial, out_path)
    if stamps is not None:
        stamps.remove()
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


def _open_partial(partial: Path, fingerprint: str, resumable: bool) -> h5py.File:
    """Start the partial store, carrying over what an earlier run with the same config completed.

    The earlier file is never written to again: a run that was killed, or whose disk filled, can
    leave HDF5's own bookkeeping behind its data (later writes would land on top of it, and reopening
    it fails with "addr overflow"). Its complete subjects that still read back are copied into a new
    file, which replaces it; anything unreadable is packed again.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    if not (resumable and partial.exists()):
        partial.unlink(missing_ok=True)
        return _create(partial, fingerprint)
    remove_dead_temporaries(partial.parent, f".{partial.name}.salvage-")
    fresh = partial.with_name(f".{partial.name}.salvage-{os.getpid()}")
    fh = _create(fresh, fingerprint)
    try:
        carried = _carry_over(partial, fh.require_group("subjects"), fingerprint)
        fh.flush()
        os.replace(fresh, partial)  # the open handle follows the file
    except BaseException:
        _close(fh, failing=True)
        fresh.unlink(missing_ok=True)
        raise
    if carried:
        log.info("%s: resuming after %d complete subjects", partial, carried)
    return fh


def _create(path: Path, fingerprint: str) -> h5py.File:
    """A new, empty partial store at ``path``."""
    fh = h5py.File(path, "w")
    fh.attrs["version"] = STORE_VERSION
    fh.attrs["image_size"] = IMAGE_SIZE
    fh.attrs["config"] = fingerprint
    fh.attrs["complete"] = False
    return fh


def _carry_over(old_path: Path, subjects: h5py.Group, fingerprint: str) -> int:
    """Copy the complete, readable subjects of the partial store ``old_path`` into ``subjects``
    when it was made with the same config; return how many were copied."""
    try:
        old = h5py.File(old_path, "r")
    except OSError as exc:
        log.warning("%s: unreadable partial store (%s); starting over", old_path, exc)
        return 0
    carried = 0
    with old:
        if old.attrs.get("config") != fingerprint or old.attrs.get("version") != STORE_VERSION:
            log.info("%s: made with another config; starting over", old_path)
            return 0
        try:
            names = list(old["subjects"]) if "subjects" in old else []
        except (OSError, RuntimeError, KeyError) as exc:
            log.warning("%s: unreadable subject list (%s); starting over", old_path, exc)
            return 0
        for name in names:
            try:
                group = old["subjects"][name]
                if not group.attrs.get("complete", False):
                    continue
                if len(group["face_present"][()]) != group["jpeg"].shape[0]:
                    raise ValueError("face_present and jpeg disagree on the frame count")
                old.copy(group, subjects, name=name)
                carried += 1
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                log.warning("%s: subject %r is unreadable (%s); packing it again", old_path, name, exc)
                if name in subjects:
                    del subjects[name]
    return carried


def _close(fh: h5py.File, failing: bool) -> None:
    """Close ``fh``; while another error is on its way out, a failing close (HDF5 flushing onto a
    full disk) is logged instead of hiding that error."""
    if not failing:
        fh.close()
        return
    name = fh.filename  # not readable once a close has failed
    try:
        fh.close()
    except (OSError, RuntimeError) as exc:
        log.debug("%s: closing after the failure also failed (%s)", name, exc)


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
        and int(attrs.get("source_bytes", -1)) == _crop_bytes(record)
    )


def _crop_bytes(record: SubjectRecord) -> int:
    """Total size of ``record``'s crop files on disk (missing crops count 0)."""
    total = 0
    for path in crop_paths(record):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # a frame without a crop: stored as face-absent
    return total


def _check_gone_crops(manifest: Manifest, face_present: Mapping[str, np.ndarray],
                      cfg: PackConfig) -> dict[str, list[tuple[int, Path]]]:
    """The crops prepare found that are gone (:func:`_gone_crops`): with ``on_corrupt: error`` a
    :class:`MissingCropError` naming them, else a warning per subject (they are counted as dropped)."""
    gone = _gone_crops(manifest, face_present)
    if gone and cfg.on_corrupt == "error":
        faults = [f"{path} (frame {frame} of {name!r})" for name, crops in gone.items() for frame, path in crops]
        raise MissingCropError(f"{len(faults)} face crop(s) that prepare found are missing: "
                               f"{join_faults(faults, 'missing crops')}; run prepare again, or set "
                               "pack_frames.on_corrupt: drop to store them as face-absent")
    for name, crops in gone.items():
        log.warning("%s: %d face crop(s) that prepare found are missing (first: %s); stored as face-absent and "
                    "counted as dropped", name, len(crops), crops[0][1])
    return gone


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
    subjects: h5py.Group, record: SubjectRecord, cfg: PackConfig, pool: Executor, bar: tqdm, gone: int = 0
) -> None:
    """Write one subject's crops chunk by chunk; mark its group complete last. ``gone``: crops prepare
    found that are missing now, counted as dropped."""
    paths = crop_paths(record)
    n = len(paths)
    group = subjects.create_group(record.name)
    jpeg = group.create_dataset(
        "jpeg", shape=(n,), dtype=JPEG_DTYPE, chunks=(min(n, cfg.chunk_frames),) if n else None
    )
    face = np.zeros(n, dtype=bool)
    source_bytes = resized = 0
    dropped = gone
    for start in range(0, n, cfg.chunk_frames):
        stop = min(n, start + cfg.chunk_frames)
        crops = list(pool.map(lambda i: _load_crop(paths[i], i, record.name, cfg), range(start, stop)))
        for k, crop in enumerate(crops):
            face[start + k] = crop.present
            source_bytes += crop.data.size
            dropped += crop.dropped
            resized += crop.resized
        _write_vlen(jpeg, start, [crop.data for crop in crops])
        bar.update(stop - start)
    group.create_dataset("face_present", data=face)
    group.attrs.update({
        "frames": n, "faces": int(face.sum()), "source_bytes": source_bytes, "dropped": dropped,
        "resized": resized, "crops_dir": record.crops_dir or "", "source": record.source,
    })
    group.attrs["complete"] = True


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
            size = _check_jpeg(data, decode=cfg.verify == "decode")
        except DECODE_ERRORS as exc:
            message = f"{path}: frame {frame} of subject {name!r}: corrupt JPEG crop ({exc})"
            if cfg.on_corrupt == "error":
                raise CorruptCropError(message) from exc
            log.warning("dropped %s", message)
            return _Crop(_EMPTY, present=False, dropped=True)
        resized = size != (IMAGE_SIZE, IMAGE_SIZE)
    return _Crop(np.frombuffer(data, dtype=np.uint8), present=True, resized=resized)


def _check_jpeg(data: bytes, decode: bool) -> tuple[int, int]:
    """Return the image size of JPEG ``data``; raise a Pillow/ValueError when it is not a valid JPEG."""
    if not data:
        raise ValueError("the file is empty (0 bytes)")
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG":
            raise ValueError(f"the file is {image.format}, not JPEG")
        if decode:
            image.load()
        return image.size


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
